//! A warning for each change the rules failed on under `on_rule_failure = "dead-letter"`,
//! rate-limited so that a bad version failing on every change cannot flood the log.
//!
//! Up to [`PER_SECOND`] lines a second; the rest are counted and the count is logged when the
//! next line is admitted (the failures themselves are all in `sync_rule_failures`, and
//! `sluice failures` summarises them).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sink::RuleFailure;

/// Failure lines logged per second.
pub const PER_SECOND: u32 = 10;

struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

static WINDOW: Mutex<Window> = Mutex::new(Window {
    start: None,
    logged: 0,
    suppressed: 0,
});

/// Logs `failure` at warn level, unless this second's budget is spent.
pub fn log(failure: &RuleFailure) {
    let Some(suppressed) = admit(&WINDOW, Instant::now()) else {
        return;
    };
    if suppressed > 0 {
        tracing::warn!(
            suppressed,
            "{suppressed} more rule failures were not logged (over {PER_SECOND} a second); `sluice failures` lists them all"
        );
    }
    tracing::warn!(
        table = %failure.table_name,
        key = %failure.record_id.as_deref().unwrap_or("(unknown)"),
        lsn = %failure.lsn,
        rules_version = %failure.rules_version,
        error = %failure.error_text,
        "the rules failed on a change; it is kept in sync_rule_failures (`sluice replay-failures` re-evaluates it)"
    );
}

/// `Some(count of lines suppressed since the last one logged)` when a line may be logged now.
fn admit(window: &Mutex<Window>, now: Instant) -> Option<u64> {
    let mut w = window.lock().unwrap_or_else(|e| e.into_inner());
    if w.start
        .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1))
    {
        w.start = Some(now);
        w.logged = 0;
    }
    if w.logged < PER_SECOND {
        w.logged += 1;
        return Some(std::mem::take(&mut w.suppressed));
    }
    w.suppressed += 1;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_a_second_then_the_count_of_the_rest() {
        let window = Mutex::new(Window {
            start: None,
            logged: 0,
            suppressed: 0,
        });
        let admit = |at| admit(&window, at);
        let t0 = Instant::now();
        let admitted: Vec<Option<u64>> = (0..13).map(|_| admit(t0)).collect();
        assert_eq!(admitted[..10], [Some(0); 10]);
        assert_eq!(admitted[10..], [None, None, None]);
        assert_eq!(admit(t0 + Duration::from_millis(999)), None);
        assert_eq!(admit(t0 + Duration::from_secs(1)), Some(4));
        assert_eq!(admit(t0 + Duration::from_secs(1)), Some(0));
    }
}
