//! The WASI interfaces that `wasm32-wasip2` std imports, linked without
//! capabilities (see `state.rs` for what each one returns). Sockets and
//! name lookup are deliberately not linked: a module that imports them is
//! rejected at load time with the name of the import.

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::sync as p2;
use wasmtime_wasi::random::WasiRandom;

use super::state::InstanceState;

struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

pub(crate) fn add_to_linker(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    type T = InstanceState;
    let l = linker;
    wasmtime_wasi::p2::bindings::io::error::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    p2::io::poll::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    p2::io::streams::add_to_linker::<T, Io>(l, |t| t.ctx().table)?;
    wasmtime_wasi::p2::bindings::clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
    wasmtime_wasi::p2::bindings::clocks::monotonic_clock::add_to_linker::<T, WasiClocks>(
        l,
        T::clocks,
    )?;
    wasmtime_wasi::p2::bindings::random::random::add_to_linker::<T, WasiRandom>(l, |t| {
        t.ctx().ctx.random()
    })?;
    wasmtime_wasi::p2::bindings::random::insecure::add_to_linker::<T, WasiRandom>(l, |t| {
        t.ctx().ctx.random()
    })?;
    wasmtime_wasi::p2::bindings::random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| {
        t.ctx().ctx.random()
    })?;
    wasmtime_wasi::p2::bindings::filesystem::preopens::add_to_linker::<T, WasiFilesystem>(
        l,
        T::filesystem,
    )?;
    p2::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
    use wasmtime_wasi::p2::bindings::cli;
    cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
    cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
    Ok(())
}
