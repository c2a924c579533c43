//! Pins the sink sessions to the configured sidecar schema (`sidecar_schema`).
//!
//! Every sidecar statement names its tables without a schema, and [`super::schema`] finds them
//! through the catalog with `to_regclass`, as those statements do. Pinning the session's
//! `search_path` to the one schema, at connection startup, therefore moves every statement at
//! once: creation, adoption, writes and reads, in every connection made from the sink settings,
//! whatever search_path the role or database has. `pg_catalog` stays implicitly first, so
//! built-in functions and types resolve as before; source tables are always schema-qualified.

use crate::pg::PgConfig;

/// Adds `-c search_path=<schema>` to the startup options of `sink`, after any the operator gave
/// (the last setting wins, so the configured schema is the one in force).
pub fn pin(sink: &mut PgConfig, schema: &str) {
    let setting = format!("-c search_path={}", escape_option(&quote_ident(schema)));
    sink.options = Some(match sink.options.take() {
        Some(given) if !given.trim().is_empty() => format!("{given} {setting}"),
        _ => setting,
    });
}

/// `name` as an SQL identifier, always quoted: a schema name is taken exactly as written.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The server splits startup options at whitespace; a backslash keeps the next character.
fn escape_option(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if c == '\\' || c.is_whitespace() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(url: &str, schema: &str) -> Option<String> {
        let mut cfg = PgConfig::parse(url).unwrap();
        pin(&mut cfg, schema);
        cfg.options
    }

    #[test]
    fn the_schema_is_quoted_and_escaped_and_comes_last() {
        assert_eq!(
            pinned("postgres://h/db", "sluice").as_deref(),
            Some("-c search_path=\"sluice\"")
        );
        assert_eq!(
            pinned("postgres://h/db", "My \"odd\\ schema").as_deref(),
            Some("-c search_path=\"My\\ \"\"odd\\\\\\ schema\"")
        );
        assert_eq!(
            pinned("host=h options='-c work_mem=1MB'", "s").as_deref(),
            Some("-c work_mem=1MB -c search_path=\"s\"")
        );
    }
}
