//! Text that comes from a guest (error outcomes, init errors, `host.log` lines, and trap messages
//! that quote them), made safe to store and to log.
//!
//! A guest controls every byte of that text, so before it reaches `sync_rule_failures`, an HTTP
//! reply or the log it is:
//! - bounded: at most [`MAX_GUEST_TEXT_BYTES`] bytes, cut on a character boundary with a note of
//!   how much was cut, so a 40 MiB message costs one 4 KiB row, not a 40 MiB one;
//! - storable: NUL, which PostgreSQL's `text` and `jsonb` refuse (and which used to stop the sink
//!   for good on every restart), never survives;
//! - one line that cannot pass for a host line: control characters (newlines, carriage returns,
//!   ANSI escapes), format characters (bidi overrides, zero-width characters) and the Unicode
//!   line and paragraph separators are written as `\u{…}` escapes.

use std::fmt::Write as _;

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Most bytes of guest text kept, after escaping.
pub const MAX_GUEST_TEXT_BYTES: usize = 4096;

/// `raw` made bounded, storable and one line (see the module comment).
///
/// ```
/// use sluice::rules::guest_text;
///
/// assert_eq!(guest_text("bad\0thing"), r"bad\u{0}thing");
/// assert_eq!(guest_text("two\nlines"), r"two\u{a}lines");
/// assert!(guest_text(&"e".repeat(40 << 20)).len() <= sluice::rules::MAX_GUEST_TEXT_BYTES);
/// ```
pub fn guest_text(raw: &str) -> String {
    if raw.len() <= MAX_GUEST_TEXT_BYTES && !raw.chars().any(needs_escape) {
        return raw.to_owned();
    }
    let mut out = String::with_capacity(raw.len().min(MAX_GUEST_TEXT_BYTES));
    // Room for the note that says how much was cut.
    let budget = MAX_GUEST_TEXT_BYTES - 48;
    for (at, c) in raw.char_indices() {
        let before = out.len();
        if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
        if out.len() > budget {
            out.truncate(before);
            let _ = write!(out, "... ({} more bytes cut)", raw.len() - at);
            break;
        }
    }
    out
}

/// True for characters that must not appear raw in a log line or a stored message.
pub(crate) fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c.general_category(),
            GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_passes_unchanged() {
        assert_eq!(guest_text("rule failed: no owner"), "rule failed: no owner");
        assert_eq!(guest_text("café ünïcode"), "café ünïcode");
    }

    #[test]
    fn controls_formats_and_separators_are_escaped() {
        assert_eq!(
            guest_text("a\0b\nc\rd\u{1b}[31me\u{202e}f\u{200b}g\u{2028}h\u{2029}i\u{feff}"),
            r"a\u{0}b\u{a}c\u{d}d\u{1b}[31me\u{202e}f\u{200b}g\u{2028}h\u{2029}i\u{feff}"
        );
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_with_a_note() {
        let raw = "é".repeat(10_000);
        let got = guest_text(&raw);
        assert!(got.len() <= MAX_GUEST_TEXT_BYTES, "{}", got.len());
        let kept = got.split("...").next().unwrap_or_default();
        assert_eq!(kept, "é".repeat(kept.chars().count()));
        let cut = raw.len() - kept.len();
        assert!(
            got.ends_with(&format!("... ({cut} more bytes cut)")),
            "{got}"
        );
    }

    #[test]
    fn escapes_count_against_the_bound() {
        let got = guest_text(&"\0".repeat(100_000));
        assert!(got.len() <= MAX_GUEST_TEXT_BYTES, "{}", got.len());
        assert!(got.starts_with(r"\u{0}\u{0}"));
        assert!(got.ends_with(" more bytes cut)"), "{got}");
    }
}
