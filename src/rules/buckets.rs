//! Checking the bucket ids a rule returned, so that a bad outcome becomes an
//! error for that change alone.

use std::collections::HashSet;

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::model::Outcome;

use super::bindings::WitOutcome;
use super::limits::MAX_BUCKET_ID_BYTES;

/// Turns a guest outcome into the pipeline's, validating, normalising (NFC) and
/// deduplicating bucket ids (first occurrence wins, order kept).
pub(crate) fn validate(outcome: WitOutcome, max_buckets: usize) -> Outcome {
    match outcome {
        WitOutcome::Drop => Outcome::Drop,
        WitOutcome::Error(message) => Outcome::Error(message),
        WitOutcome::Keep(buckets) => match validate_buckets(buckets, max_buckets) {
            Ok(buckets) => Outcome::Keep(buckets),
            Err(message) => Outcome::Error(message),
        },
    }
}

fn validate_buckets(mut buckets: Vec<String>, max_buckets: usize) -> Result<Vec<String>, String> {
    for bucket in &mut buckets {
        check_id(bucket)?;
    }
    if buckets.len() <= 16 {
        // Few ids: a quadratic scan beats hashing and allocates nothing.
        let mut kept = 0;
        for i in 0..buckets.len() {
            if !buckets[..kept].contains(&buckets[i]) {
                buckets.swap(kept, i);
                kept += 1;
            }
        }
        buckets.truncate(kept);
    } else {
        let mut seen = HashSet::with_capacity(buckets.len());
        buckets.retain(|b| seen.insert(b.clone()));
    }
    if buckets.len() > max_buckets {
        return Err(format!(
            "rule returned {} bucket ids for one change; at most {max_buckets} are allowed \
             (RuleLimits::max_buckets_per_change)",
            buckets.len()
        ));
    }
    Ok(buckets)
}

/// NFC shrinks text at most three to one (a Hangul syllable from three jamo,
/// U+0390 from three Greek code points), so an id longer than this cannot fit
/// whatever its form: it is refused before it is scanned or normalised.
const MAX_RAW_ID_BYTES: usize = 4 * MAX_BUCKET_ID_BYTES;

/// Checks one id and puts it in NFC, so that ids that differ only in how an
/// accent is encoded are one bucket. The length is checked on the NFC form.
///
/// Refused: the empty id, control characters (Cc), format characters (Cf: the
/// zero-width space and joiners, bidi embeddings, overrides and isolates, the
/// byte-order mark, the soft hyphen...) and the line and paragraph separators
/// (Zl, Zp). They are invisible or break lines, so they make ids that look
/// alike but are different buckets.
fn check_id(bucket: &mut String) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("rule returned an empty bucket id".to_owned());
    }
    if bucket.len() > MAX_RAW_ID_BYTES {
        return Err(too_long(bucket));
    }
    if bucket.is_ascii() {
        // Nearly every id (`user:42`): in ASCII the only refused characters are the controls
        // (Cc is U+0000 to U+001F and U+007F there; no Cf, Zl or Zp), and ASCII is its own NFC.
        // Checked by `ascii_ids_are_judged_as_by_their_general_category`.
        if let Some(c) = bucket.chars().find(char::is_ascii_control) {
            return Err(refused_char(bucket, c, "control character", ""));
        }
        return if bucket.len() > MAX_BUCKET_ID_BYTES {
            Err(too_long(bucket))
        } else {
            Ok(())
        };
    }
    check_chars(bucket)?;
    if is_nfc_quick(bucket.chars()) != IsNormalized::Yes {
        *bucket = bucket.nfc().collect();
    }
    if bucket.len() > MAX_BUCKET_ID_BYTES {
        return Err(too_long(bucket));
    }
    Ok(())
}

/// Refuses an id containing a character of a refused general category.
fn check_chars(bucket: &str) -> Result<(), String> {
    for c in bucket.chars() {
        let (what, why) = match c.general_category() {
            GeneralCategory::Control => ("control character", ""),
            GeneralCategory::Format => (
                "format character",
                " (invisible characters make ids that look alike; see wit/rules.wit)",
            ),
            GeneralCategory::LineSeparator => {
                ("line separator", " (an id is one line; see wit/rules.wit)")
            }
            GeneralCategory::ParagraphSeparator => (
                "paragraph separator",
                " (an id is one line; see wit/rules.wit)",
            ),
            _ => continue,
        };
        return Err(refused_char(bucket, c, what, why));
    }
    Ok(())
}

fn refused_char(bucket: &str, c: char, what: &str, why: &str) -> String {
    format!(
        "rule returned bucket id {bucket:?}, which contains {what} U+{:04X}{why}",
        u32::from(c)
    )
}

fn too_long(bucket: &str) -> String {
    let prefix: String = bucket.chars().take(32).collect();
    format!(
        "rule returned a bucket id of {} bytes ({prefix:?}...); at most {MAX_BUCKET_ID_BYTES} are allowed",
        bucket.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(ids: &[&str]) -> WitOutcome {
        WitOutcome::Keep(ids.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn duplicates_are_removed_keeping_first_order() {
        assert_eq!(
            validate(keep(&["b", "a", "b", "c", "a"]), 64),
            Outcome::Keep(vec!["b".into(), "a".into(), "c".into()])
        );
        let many: Vec<String> = (0..40).map(|i| format!("x{}", i % 20)).collect();
        let expected: Vec<String> = (0..20).map(|i| format!("x{i}")).collect();
        assert_eq!(
            validate(WitOutcome::Keep(many), 64),
            Outcome::Keep(expected)
        );
    }

    #[test]
    fn fan_out_cap_counts_distinct_ids() {
        let ids: Vec<String> = (0..65).map(|i| format!("b:{i}")).collect();
        assert_eq!(
            validate(WitOutcome::Keep(ids), 64),
            Outcome::Error(
                "rule returned 65 bucket ids for one change; at most 64 are allowed \
                 (RuleLimits::max_buckets_per_change)"
                    .into()
            )
        );
        let same = vec!["global".to_string(); 100];
        assert_eq!(
            validate(WitOutcome::Keep(same), 64),
            Outcome::Keep(vec!["global".into()])
        );
    }

    #[test]
    fn invalid_ids_are_errors() {
        assert_eq!(
            validate(keep(&["ok", ""]), 64),
            Outcome::Error("rule returned an empty bucket id".into())
        );
        assert_eq!(
            validate(keep(&["user:\u{7}"]), 64),
            Outcome::Error(
                "rule returned bucket id \"user:\\u{7}\", which contains control character U+0007"
                    .into()
            )
        );
        let long = "é".repeat(128);
        assert_eq!(
            validate(WitOutcome::Keep(vec![long]), 64),
            Outcome::Error(format!(
                "rule returned a bucket id of 256 bytes ({:?}...); at most 255 are allowed",
                "é".repeat(32)
            ))
        );
        assert_eq!(
            validate(keep(&["x".repeat(255).as_str()]), 64),
            Outcome::Keep(vec!["x".repeat(255)])
        );
    }

    #[test]
    fn invisible_and_line_breaking_characters_are_refused() {
        let format = "(invisible characters make ids that look alike; see wit/rules.wit)";
        let line = "(an id is one line; see wit/rules.wit)";
        let cases = [
            (
                "user:\u{200b}1",
                format!(
                    "rule returned bucket id \"user:\\u{{200b}}1\", which contains format \
                     character U+200B {format}"
                ),
            ),
            (
                "user:\u{202e}1",
                format!(
                    "rule returned bucket id \"user:\\u{{202e}}1\", which contains format \
                     character U+202E {format}"
                ),
            ),
            (
                "\u{feff}user:1",
                format!(
                    "rule returned bucket id \"\\u{{feff}}user:1\", which contains format \
                     character U+FEFF {format}"
                ),
            ),
            (
                "user:\u{ad}1",
                format!(
                    "rule returned bucket id \"user:\\u{{ad}}1\", which contains format \
                     character U+00AD {format}"
                ),
            ),
            (
                "user:1\u{2028}",
                format!(
                    "rule returned bucket id \"user:1\\u{{2028}}\", which contains line \
                     separator U+2028 {line}"
                ),
            ),
            (
                "user:1\u{2029}",
                format!(
                    "rule returned bucket id \"user:1\\u{{2029}}\", which contains paragraph \
                     separator U+2029 {line}"
                ),
            ),
        ];
        for (id, expected) in cases {
            assert_eq!(
                validate(keep(&["user:1", id]), 64),
                Outcome::Error(expected),
                "{id:?}"
            );
        }
        // The rest of Cf, by sample: bidi marks, embeddings and isolates, word joiner,
        // invisible operators, zero-width joiners, a tag character.
        for c in [
            '\u{200c}',
            '\u{200d}',
            '\u{200e}',
            '\u{200f}',
            '\u{202a}',
            '\u{202d}',
            '\u{2060}',
            '\u{2064}',
            '\u{2066}',
            '\u{2069}',
            '\u{61c}',
            '\u{e0041}',
        ] {
            let Outcome::Error(e) = validate(keep(&[&format!("user:{c}1")]), 64) else {
                panic!("U+{:04X} accepted", u32::from(c));
            };
            assert!(
                e.ends_with(&format!("format character U+{:04X} {format}", u32::from(c))),
                "{e}"
            );
        }
        // Visible non-ASCII is fine.
        assert_eq!(
            validate(keep(&["org:東京", "user:Zoë", "team:🚀"]), 64),
            Outcome::Keep(vec!["org:東京".into(), "user:Zoë".into(), "team:🚀".into()])
        );
    }

    #[test]
    fn ascii_ids_are_judged_as_by_their_general_category() {
        for b in 0u8..=0x7f {
            let id = format!("user:{}42", b as char);
            let mut fast = id.clone();
            let general = check_chars(&id).map(|()| id.clone());
            assert_eq!(check_id(&mut fast).map(|()| fast), general, "byte {b:#04x}");
        }
    }

    #[test]
    fn ids_are_normalised_to_nfc_before_deduplication() {
        assert_eq!(
            validate(keep(&["user:e\u{301}", "user:\u{e9}"]), 64),
            Outcome::Keep(vec!["user:\u{e9}".into()])
        );
        assert_eq!(
            validate(keep(&["user:\u{e9}", "user:e\u{301}"]), 64),
            Outcome::Keep(vec!["user:\u{e9}".into()])
        );
        // Hangul jamo compose into one syllable.
        assert_eq!(
            validate(keep(&["org:\u{1100}\u{1161}\u{11a8}"]), 64),
            Outcome::Keep(vec!["org:\u{ac01}".into()])
        );
        // Twenty ids take the hashing path; two pairs collapse after NFC.
        let mut ids: Vec<String> = (0..18).map(|i| format!("x{i}")).collect();
        ids.extend(["é".into(), "e\u{301}".into(), "Å".into(), "A\u{30a}".into()]);
        let Outcome::Keep(kept) = validate(WitOutcome::Keep(ids), 64) else {
            panic!()
        };
        assert_eq!(kept.len(), 20);
        assert_eq!(&kept[18..], ["é", "Å"]);
    }

    #[test]
    fn length_is_checked_on_the_nfc_form() {
        // 255 "e" + U+0301 pairs are 765 bytes decomposed, 510 composed: too long either way,
        // and the message gives the NFC length.
        let decomposed = "e\u{301}".repeat(255);
        assert_eq!(
            validate(WitOutcome::Keep(vec![decomposed]), 64),
            Outcome::Error(format!(
                "rule returned a bucket id of 510 bytes ({:?}...); at most 255 are allowed",
                "é".repeat(32)
            ))
        );
        // 85 Hangul syllables written as jamo: 765 bytes, 255 in NFC, so it fits.
        let jamo = "\u{1100}\u{1161}\u{11a8}".repeat(85);
        assert_eq!(jamo.len(), 765);
        assert_eq!(
            validate(WitOutcome::Keep(vec![jamo]), 64),
            Outcome::Keep(vec!["\u{ac01}".repeat(85)])
        );
        // Longer than NFC could ever bring under the limit: refused before normalising.
        let huge = "e\u{301}".repeat(400);
        assert_eq!(
            validate(WitOutcome::Keep(vec![huge]), 64),
            Outcome::Error(format!(
                "rule returned a bucket id of 1200 bytes ({:?}...); at most 255 are allowed",
                "e\u{301}".repeat(16)
            ))
        );
    }

    #[test]
    fn drop_and_error_pass_through() {
        assert_eq!(validate(WitOutcome::Drop, 64), Outcome::Drop);
        assert_eq!(
            validate(WitOutcome::Error("no".into()), 64),
            Outcome::Error("no".into())
        );
    }
}
