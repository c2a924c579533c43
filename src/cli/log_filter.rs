//! The log filter: `SLUICE_LOG` over the command's default, `RUST_LOG` for everything.
//!
//! A bare level in `SLUICE_LOG` (`debug`) means sluice's own lines: wasmtime and cranelift log
//! thousands of debug lines a second while compiling, which would bury sluice's. Directives that
//! name a target are used as written, so any crate can still be raised on its own
//! (`SLUICE_LOG=debug,tokio_postgres=debug`), and replace the command's own sluice directives. `RUST_LOG`, when `SLUICE_LOG` is unset, is the
//! usual env-filter over every crate (`RUST_LOG=debug`: everything).

const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

/// The env-filter directives to log with.
pub fn directives(default: &str, sluice_log: Option<&str>, rust_log: Option<&str>) -> String {
    if let Some(text) = given(sluice_log) {
        let ours: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| {
                if LEVELS.contains(&d.to_ascii_lowercase().as_str()) {
                    format!("sluice={d}")
                } else {
                    d.to_owned()
                }
            })
            .collect();
        // The default's own sluice directives (check's `sluice::rules::guest=debug`) would be
        // more specific than the operator's `sluice=…`, and win: they give way.
        let mut all: Vec<String> = default
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty() && !d.starts_with("sluice"))
            .map(str::to_owned)
            .collect();
        all.extend(ours);
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
            directives(RUN, Some("debug,tokio_postgres=trace"), None),
            "info,wasmtime=warn,cranelift=warn,sluice=debug,tokio_postgres=trace"
        );
        assert_eq!(directives(RUN, None, None), RUN);
        assert_eq!(
            directives(
                "warn,sluice::rules::guest=debug,wasmtime=warn",
                Some("error"),
                None
            ),
            "warn,wasmtime=warn,sluice=error"
        );
        assert_eq!(directives(RUN, Some(" "), None), RUN);
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
