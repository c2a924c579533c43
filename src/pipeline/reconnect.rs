//! How `sluice run` waits between reconnects, and how it says why it reconnects.

use std::time::Duration;

/// The first wait after a lost connection; it doubles on every failed attempt up to the cap.
const FIRST: Duration = Duration::from_millis(250);

/// Capped exponential backoff. A server that restarts is usually back within a second or two,
/// so the cap (`reconnect.max_backoff_ms`, 5 s by default) bounds how long after its return
/// sluice resumes.
#[derive(Debug, Clone)]
pub struct Backoff {
    cap: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff that starts at 250 ms (or the cap, if smaller) and never waits longer than `cap`.
    pub fn new(cap: Duration) -> Backoff {
        Backoff {
            cap,
            next: FIRST.min(cap),
        }
    }

    /// The wait before the next attempt; doubles the one after.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.cap);
        wait
    }

    /// After a session that reached streaming: the next outage starts from the short wait again.
    pub fn reset(&mut self) {
        self.next = FIRST.min(self.cap);
    }
}

/// The error's message followed by each cause that the message does not already contain, so the
/// root cause ("Connection refused") is in the line even when a wrapper's text leaves it out
/// (tokio-postgres's "error connecting to server").
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(5));
        let waits: Vec<u64> = (0..7).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(250));
        let mut tiny = Backoff::new(Duration::from_millis(100));
        assert_eq!(tiny.next_wait(), Duration::from_millis(100));
        assert_eq!(tiny.next_wait(), Duration::from_millis(100));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot connect to db:5432: error connecting to server")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_the_message_lacks_are_appended_once() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "Connection refused (os error 111)",
        ));
        assert_eq!(
            with_causes(&e),
            "cannot connect to db:5432: error connecting to server: Connection refused (os error 111)"
        );
        let inner = std::io::Error::other("error connecting to server");
        assert_eq!(
            with_causes(&Outer(inner)),
            "cannot connect to db:5432: error connecting to server"
        );
    }
}
