//! libpq's password file (`~/.pgpass`, `PGPASSFILE`, the `passfile` option): lines of
//! `hostname:port:database:username:password`, `*` matching anything, `\` escaping `:` and `\`.
//!
//! Our own ~60 lines rather than a crate: the one Rust crate for it (postgres_secrets 1.0.0) has
//! a single release and pulls in the blocking `postgres` client and nom for what is a split on
//! unescaped colons.

use std::path::{Path, PathBuf};

/// What a password file entry is matched against.
#[derive(Debug, Clone, Copy)]
pub struct Lookup<'a> {
    /// The host name, or the socket directory for a Unix-domain connection.
    pub host: &'a str,
    /// Whether `host` is a socket directory: libpq then also matches the entry `localhost`.
    pub unix: bool,
    pub port: u16,
    pub dbname: &'a str,
    pub user: &'a str,
}

/// The password file libpq would read: `passfile`, else `PGPASSFILE`, else `$HOME/.pgpass`.
pub fn path(passfile: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    passfile
        .map(str::to_owned)
        .or_else(|| env("PGPASSFILE"))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".pgpass")))
}

/// The password of the first entry of the file at `path` that matches, if any.
///
/// As in libpq, a missing or unreadable file is no error (the server then asks for a password
/// sluice does not have, and that error names the user and server), and a file that others can
/// read is ignored with a warning: it would leak passwords.
pub fn find(path: &Path, want: Lookup<'_>) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                target: "sluice::pg",
                file = %path.display(),
                "password file has group or world access and is ignored; permissions should be u=rw (0600) or less"
            );
            return None;
        }
    }
    let text = std::fs::read_to_string(path).ok()?;
    find_in(&text, want)
}

/// [`find`] on the file's text.
pub fn find_in(text: &str, want: Lookup<'_>) -> Option<String> {
    let port = want.port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(fields)
        .find(|[host, p, db, user, _]| {
            let any = |f: &str, v: &str| f == "*" || f == v;
            (any(host, want.host) || (want.unix && host == "localhost"))
                && any(p, &port)
                && any(db, want.dbname)
                && any(user, want.user)
        })
        .map(|[.., password]| password)
}

/// The five fields of a line, unescaped; `None` for a line with fewer. Text after a sixth colon
/// belongs to the password, as libpq reads it.
fn fields(line: &str) -> Option<[String; 5]> {
    let mut out: [String; 5] = Default::default();
    let mut i = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out[i].push(n);
                }
            }
            ':' if i < 4 => i += 1,
            c => out[i].push(c),
        }
    }
    (i == 4).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want<'a>(host: &'a str, port: u16, db: &'a str, user: &'a str) -> Lookup<'a> {
        Lookup {
            host,
            unix: host.starts_with('/'),
            port,
            dbname: db,
            user,
        }
    }

    #[test]
    fn first_matching_entry_wins_with_wildcards_and_escapes() {
        let text = "# comment\n\
                    db.example.com:5432:app:alice:first\n\
                    *:*:app:alice:second\n\
                    *:6543:*:bob:p\\:w\\\\d\n\
                    localhost:*:*:carol:sock\n\
                    short:line\n";
        assert_eq!(
            find_in(text, want("db.example.com", 5432, "app", "alice")).as_deref(),
            Some("first")
        );
        assert_eq!(
            find_in(text, want("other", 1, "app", "alice")).as_deref(),
            Some("second")
        );
        assert_eq!(
            find_in(text, want("h", 6543, "x", "bob")).as_deref(),
            Some("p:w\\d")
        );
        assert_eq!(find_in(text, want("h", 5432, "x", "bob")), None);
        // A Unix-domain connection matches `localhost`, as in libpq.
        assert_eq!(
            find_in(text, want("/run/postgresql", 5432, "d", "carol")).as_deref(),
            Some("sock")
        );
        assert_eq!(find_in(text, want("127.0.0.1", 5432, "d", "carol")), None);
    }

    #[test]
    fn the_file_comes_from_the_option_then_pgpassfile_then_home() {
        let env = |k: &str| match k {
            "PGPASSFILE" => Some("/env/pass".to_owned()),
            "HOME" => Some("/home/u".to_owned()),
            _ => None,
        };
        assert_eq!(path(Some("/opt"), &env), Some(PathBuf::from("/opt")));
        assert_eq!(path(None, &env), Some(PathBuf::from("/env/pass")));
        let home_only = |k: &str| (k == "HOME").then(|| "/home/u".to_owned());
        assert_eq!(
            path(None, &home_only),
            Some(PathBuf::from("/home/u/.pgpass"))
        );
        assert_eq!(path(None, &|_| None), None);
    }
}
