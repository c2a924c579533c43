//! The WASI interfaces a rules module may import (the allowlist in `imports.rs`), linked
//! without capabilities (see `state.rs` for what each one returns): io and cli, which every
//! `wasm32-wasip2` std module imports, and random, which std's `HashMap` seeds itself from.
//! Clocks, the filesystem, sockets and HTTP are deliberately not linked: a module that imports
//! them is refused at load with the name of the import.

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::WasiView;
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
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
    wasmtime_wasi::p2::bindings::random::random::add_to_linker::<T, WasiRandom>(l, |t| {
        t.ctx().ctx.random()
    })?;
    wasmtime_wasi::p2::bindings::random::insecure::add_to_linker::<T, WasiRandom>(l, |t| {
        t.ctx().ctx.random()
    })?;
    wasmtime_wasi::p2::bindings::random::insecure_seed::add_to_linker::<T, WasiRandom>(l, |t| {
        t.ctx().ctx.random()
    })?;
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
