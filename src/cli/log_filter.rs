//! The log filter: `SLUICE_LOG` over the command's default, `RUST_LOG` for everything.
//!
//! `SLUICE_LOG` set to a bare level (`debug`) means sluice's own lines at that level, over the
//! command's default for the rest: wasmtime and cranelift log thousands of debug lines a second
//! while compiling, which would bury sluice's. A filter that names a target
//! (`info,sluice=debug`, `debug,tokio_postgres=trace`) is used as written, as env-filter reads
//! it. `RUST_LOG`, when `SLUICE_LOG` is unset, is the usual env-filter over every crate
//! (`RUST_LOG=debug`: everything).

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// The env-filter directives to log with.
pub fn directives(default: &str, sluice_log: Option<&str>, rust_log: Option<&str>) -> String {
    if let Some(text) = given(sluice_log) {
        if !LEVELS.contains(&text.to_ascii_lowercase().as_str()) {
            return text.to_owned();
        }
        // The default's own sluice directives (check's `sluice::rules::guest=debug`) would be
        // more specific than the operator's `sluice=…`, and win: they give way.
        let mut all: Vec<String> = default
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty() && !d.starts_with("sluice"))
            .map(str::to_owned)
            .collect();
        all.push(format!("sluice={text}"));
        return all.join(",");
    }
    given(rust_log).map_or_else(|| default.to_owned(), str::to_owned)
}

/// A variable's value, unless unset or blank.
fn given(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "info,wasmtime=warn,cranelift=warn";

    #[test]
    fn a_bare_level_is_sluices_own() {
        assert_eq!(
            directives(RUN, Some("debug"), None),
            "info,wasmtime=warn,cranelift=warn,sluice=debug"
        );
        assert_eq!(
            directives(
                "warn,sluice::rules::guest=debug,wasmtime=warn",
                Some("error"),
                None
            ),
            "warn,wasmtime=warn,sluice=error"
        );
        assert_eq!(directives(RUN, None, None), RUN);
        assert_eq!(directives(RUN, Some(" "), None), RUN);
    }

    #[test]
    fn a_filter_with_targets_is_used_as_written() {
        assert_eq!(
            directives(RUN, Some("info,sluice=debug"), None),
            "info,sluice=debug"
        );
        assert_eq!(
            directives(RUN, Some("debug,tokio_postgres=trace"), None),
            "debug,tokio_postgres=trace"
        );
    }

    #[test]
    fn rust_log_is_everything_when_sluice_log_is_unset() {
        assert_eq!(directives(RUN, None, Some("debug")), "debug");
        assert_eq!(
            directives(RUN, Some("warn"), Some("debug")),
            "info,wasmtime=warn,cranelift=warn,sluice=warn"
        );
    }
}
