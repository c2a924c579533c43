//! How an error reads on one line: at the binary's edge, and in reload rejections.
//!
//! Library errors put their cause in their own message (`… while reading wal_level: {source}`)
//! and also return it from `source()`, and tokio-postgres's errors print their cause too
//! (`db error: ERROR: …`), so printing every link of the chain repeats each cause: `db error:
//! ERROR: x: ERROR: x`, `(os error 2): … (os error 2)`. A link whose text is already in the line
//! adds nothing and is left out.

/// The error and its causes on one line, each cause once.
pub fn chain<'a>(links: impl IntoIterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut text = String::new();
    for link in links {
        let part = one_line(&link.to_string());
        if part.is_empty() || text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// `text` with its line breaks (and the indentation after them) turned into single spaces, so
/// that a multi-line message (a compiler's error with its context) stays one log line.
pub fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Read {
        path: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::from_raw_os_error(2);
        let err = anyhow::Error::new(Read {
            path: "rules.wasm",
            source: io,
        })
        .context("loading the rules");
        assert_eq!(
            chain(err.chain()),
            "loading the rules: reading rules.wasm: No such file or directory (os error 2)"
        );
        // A cause that says something new is kept.
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(chain(err.chain()), "outer: inner");
    }

    #[test]
    fn multi_line_text_becomes_one_line() {
        assert_eq!(
            one_line("failed to parse\n\nCaused by:\n    0: bad magic\n"),
            "failed to parse Caused by: 0: bad magic"
        );
        let err = anyhow::anyhow!("line one\n  line two").context("outer");
        assert_eq!(chain(err.chain()), "outer: line one line two");
    }
}
