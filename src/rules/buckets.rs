//! Checking the bucket ids a rule returned, so that a bad outcome becomes an
//! error for that change alone.

use std::collections::HashSet;

use crate::model::Outcome;

use super::bindings::WitOutcome;
use super::limits::MAX_BUCKET_ID_BYTES;

/// Turns a guest outcome into the pipeline's, validating and deduplicating
/// bucket ids (first occurrence wins, order kept).
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
    for bucket in &buckets {
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

fn check_id(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("rule returned an empty bucket id".to_owned());
    }
    if bucket.len() > MAX_BUCKET_ID_BYTES {
        let prefix: String = bucket.chars().take(32).collect();
        return Err(format!(
            "rule returned a bucket id of {} bytes ({prefix:?}...); at most {MAX_BUCKET_ID_BYTES} are allowed",
            bucket.len()
        ));
    }
    if let Some(c) = bucket.chars().find(|c| c.is_control()) {
        return Err(format!(
            "rule returned bucket id {bucket:?}, which contains control character U+{:04X}",
            u32::from(c)
        ));
    }
    Ok(())
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
    fn drop_and_error_pass_through() {
        assert_eq!(validate(WitOutcome::Drop, 64), Outcome::Drop);
        assert_eq!(
            validate(WitOutcome::Error("no".into()), 64),
            Outcome::Error("no".into())
        );
    }
}
