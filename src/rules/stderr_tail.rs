//! A guest's stderr, kept only as its last few KiB: Python and JavaScript components print an
//! uncaught exception there before trapping with `unreachable`, so its last line is the reason
//! a trap is reported with when the guest logged no error through `host.log`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes of stderr kept: the end of a Python traceback or a JavaScript error with its stack.
const KEPT_BYTES: usize = 4096;

/// The end of one instance's stderr. Writes always succeed (the guest never sees a full pipe);
/// older bytes fall off the front.
#[derive(Clone, Default)]
pub(crate) struct StderrTail {
    bytes: Arc<Mutex<VecDeque<u8>>>,
}

impl StderrTail {
    fn push(&self, data: &[u8]) {
        let mut kept = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let data = &data[data.len().saturating_sub(KEPT_BYTES)..];
        let overflow = (kept.len() + data.len()).saturating_sub(KEPT_BYTES);
        let dropped = overflow.min(kept.len());
        kept.drain(..dropped);
        kept.extend(data);
    }

    /// Forgets what was written so far (before each call, so a reason is that call's).
    pub(crate) fn clear(&self) {
        self.bytes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The last line that says something: not blank, and not a traceback's indented source
    /// line. Raw guest text: the caller bounds it with `guest_text`.
    pub(crate) fn last_line(&self) -> Option<String> {
        let kept = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        let bytes: Vec<u8> = kept.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        text.lines()
            .rev()
            .map(str::trim_end)
            .find(|line| !line.trim().is_empty() && !line.starts_with(' '))
            .map(str::to_owned)
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl Pollable for StderrTail {
    fn ready<'a, 'b>(&'a mut self) -> Pin<Box<dyn Future<Output = ()> + Send + 'b>>
    where
        'a: 'b,
        Self: 'b,
    {
        Box::pin(std::future::ready(()))
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_end_and_finds_the_last_line_that_says_something() {
        let tail = StderrTail::default();
        tail.push(b"Traceback (most recent call last):\n  File \"app.py\", line 3, in evaluate\n");
        tail.push(b"    raise ValueError(\"no owner\")\nValueError: no owner\n\n");
        assert_eq!(tail.last_line().as_deref(), Some("ValueError: no owner"));
        tail.push(&vec![b'x'; 10_000]);
        assert_eq!(tail.last_line().unwrap().len(), KEPT_BYTES);
        tail.clear();
        assert_eq!(tail.last_line(), None);
    }
}
