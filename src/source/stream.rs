//! The CopyBoth phase: a socket-reader task that decodes WAL into events, a writer task that
//! sends standby status updates, and a bounded channel between the reader and the consumer.
//!
//! Backpressure: when the channel is full the reader waits, so the socket is not read and the
//! server's send buffer fills; the writer keeps sending status updates on its interval, which
//! keeps `wal_sender_timeout` from firing while the consumer is slow.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::model::Lsn;

use super::error::SourceError;
use super::events::{EventDecoder, SourceEvent};
use super::replication::StartOptions;
use super::wire::{BoxStream, FrameReader, Wire, parse_error};

const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared {
    confirmed: AtomicU64,
    last_received: AtomicU64,
    /// Set by `close` so that the reader drains quietly instead of reporting a lost connection.
    closing: AtomicBool,
}

enum Cmd {
    Status(Option<oneshot::Sender<std::io::Result<()>>>),
    CopyDone(oneshot::Sender<std::io::Result<()>>),
    Terminate(oneshot::Sender<()>),
}

type Item = Result<SourceEvent, SourceError>;

/// Events travel from the reader to the consumer in batches: one channel operation (and at most
/// one wake-up of the consumer's thread) per batch instead of per event. A batch ends when the
/// socket has nothing more buffered, so batching never delays an event.
const BATCH: usize = 256;

/// Confirms LSNs on behalf of a [`ReplicationStream`]; cheap to clone and send to other tasks.
#[derive(Clone)]
pub struct Acker {
    shared: Arc<Shared>,
}

impl Acker {
    /// Same as [`ReplicationStream::confirm`].
    pub fn confirm(&self, lsn: Lsn) {
        self.shared.confirmed.fetch_max(lsn.0, Ordering::AcqRel);
    }
}

/// What a stream has received and what is confirmed, readable from any task or thread (the lag
/// metrics read it when they are scraped, however busy the pipeline is).
#[derive(Clone)]
pub struct StreamPositions {
    shared: Arc<Shared>,
}

impl StreamPositions {
    /// The highest WAL position received: a change's start, or a keepalive's WAL end.
    pub fn received(&self) -> Lsn {
        Lsn(self.shared.last_received.load(Ordering::Acquire))
    }

    /// The highest LSN confirmed (persisted in the sink, or carrying nothing to persist).
    pub fn confirmed(&self) -> Lsn {
        Lsn(self.shared.confirmed.load(Ordering::Acquire))
    }
}

/// A running logical replication stream.
pub struct ReplicationStream {
    events: mpsc::Receiver<Vec<Item>>,
    /// The rest of the batch being consumed, in reverse order (popped from the end).
    current: Vec<Item>,
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    reader: Option<JoinHandle<()>>,
    writer: Option<JoinHandle<()>>,
    target: String,
}

impl ReplicationStream {
    pub(crate) fn spawn(wire: Wire, opts: StartOptions) -> Self {
        let shared = Arc::new(Shared {
            confirmed: AtomicU64::new(opts.start_lsn.0),
            last_received: AtomicU64::new(opts.start_lsn.0),
            closing: AtomicBool::new(false),
        });
        let (tx, events) = mpsc::channel(opts.channel_capacity.div_ceil(BATCH).max(2));
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let Wire {
            reader,
            writer,
            target,
            ..
        } = wire;
        let reader = tokio::spawn(read_loop(ReadState {
            frames: reader,
            tx,
            pending: Vec::with_capacity(BATCH),
            cmds: cmds.clone(),
            shared: shared.clone(),
            decoder: EventDecoder::new(),
            target: target.clone(),
            slot: opts.slot.clone(),
        }));
        let writer = tokio::spawn(write_loop(
            writer,
            cmd_rx,
            shared.clone(),
            opts.status_interval,
        ));
        ReplicationStream {
            events,
            current: Vec::new(),
            cmds,
            shared,
            reader: Some(reader),
            writer: Some(writer),
            target,
        }
    }

    /// Next decoded event; `Ok(None)` after a clean end of the stream.
    pub async fn recv(&mut self) -> Result<Option<SourceEvent>, SourceError> {
        if self.current.is_empty() {
            match self.events.recv().await {
                Some(mut batch) => {
                    batch.reverse();
                    self.current = batch;
                }
                None => return Ok(None),
            }
        }
        match self.current.pop() {
            Some(Ok(ev)) => Ok(Some(ev)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        }
    }

    /// Reports `lsn` as written, flushed and applied: the server may release WAL before it.
    /// Sent with the next status update; never moves backwards.
    pub fn confirm(&self, lsn: Lsn) {
        self.shared.confirmed.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// A handle that confirms LSNs from another task (the one that commits the sink).
    pub fn acker(&self) -> Acker {
        Acker {
            shared: self.shared.clone(),
        }
    }

    /// A handle on what this stream has received and confirmed.
    pub fn positions(&self) -> StreamPositions {
        StreamPositions {
            shared: self.shared.clone(),
        }
    }

    /// The highest LSN passed to [`ReplicationStream::confirm`] (or the start LSN).
    pub fn confirmed(&self) -> Lsn {
        Lsn(self.shared.confirmed.load(Ordering::Acquire))
    }

    /// Sends a standby status update now and waits until it is written to the socket.
    pub async fn send_status_now(&self) -> Result<(), SourceError> {
        let (ack, done) = oneshot::channel();
        self.cmds
            .send(Cmd::Status(Some(ack)))
            .map_err(|_| SourceError::Closed)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SourceError::ConnectionLost {
                target: self.target.clone(),
                last_lsn: Lsn(self.shared.last_received.load(Ordering::Acquire)),
                reason: e.to_string(),
            }),
            Err(_) => Err(SourceError::Closed),
        }
    }

    /// Sends a final status update, ends CopyBoth with CopyDone, drains what the server still
    /// sends, and terminates the session.
    pub async fn close(mut self) -> Result<(), SourceError> {
        self.shared.closing.store(true, Ordering::Release);
        let (ack, done) = oneshot::channel();
        let sent = self.cmds.send(Cmd::CopyDone(ack)).is_ok() && matches!(done.await, Ok(Ok(())));
        // Unblock a reader waiting on a full channel; it then discards the rest.
        self.events.close();
        while self.events.try_recv().is_ok() {}
        if let Some(reader) = self.reader.take() {
            if sent {
                let abort = reader.abort_handle();
                if tokio::time::timeout(CLOSE_TIMEOUT, reader).await.is_err() {
                    abort.abort();
                }
            } else {
                reader.abort();
            }
        }
        let (ack, done) = oneshot::channel();
        if self.cmds.send(Cmd::Terminate(ack)).is_ok() {
            let _ = done.await;
        }
        if let Some(writer) = self.writer.take() {
            let _ = writer.await;
        }
        Ok(())
    }
}

impl Drop for ReplicationStream {
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            r.abort();
        }
        if let Some(w) = self.writer.take() {
            w.abort();
        }
    }
}

struct ReadState {
    frames: FrameReader<ReadHalf<BoxStream>>,
    tx: mpsc::Sender<Vec<Item>>,
    /// Decoded, not yet sent.
    pending: Vec<Item>,
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    decoder: EventDecoder,
    target: String,
    slot: String,
}

impl ReadState {
    fn last(&self) -> Lsn {
        Lsn(self.shared.last_received.load(Ordering::Acquire))
    }

    fn note_received(&self, lsn: u64) {
        self.shared.last_received.fetch_max(lsn, Ordering::AcqRel);
    }

    /// Sends what is pending. A batch of keepalives alone is advisory: it is dropped rather than
    /// blocking the socket when the consumer is behind. Returns false once the consumer is gone.
    async fn flush(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH));
        let advisory = batch
            .iter()
            .all(|i| matches!(i, Ok(SourceEvent::Keepalive { .. })));
        if advisory {
            return !matches!(
                self.tx.try_send(batch),
                Err(mpsc::error::TrySendError::Closed(_))
            );
        }
        self.tx.send(batch).await.is_ok()
    }

    /// Sends what is pending, then `err`.
    async fn fail(&mut self, err: SourceError) {
        if self.flush().await {
            let _ = self.tx.send(vec![Err(err)]).await;
        }
    }

    fn lost(&self, reason: String) -> SourceError {
        SourceError::ConnectionLost {
            target: self.target.clone(),
            last_lsn: self.last(),
            reason,
        }
    }
}

async fn read_loop(mut st: ReadState) {
    // After the consumer is gone (close), keep reading to the end of the protocol exchange.
    let mut discard = false;
    let mut copy_done = false;
    loop {
        let frame = match st.frames.next().await {
            Ok(f) => f,
            Err(e) => {
                if !discard && !st.shared.closing.load(Ordering::Acquire) {
                    let err = st.lost(e.to_string());
                    st.fail(err).await;
                }
                return;
            }
        };
        // Anything but data ends a batch: what was decoded goes out before it is acted on.
        if (frame.tag != b'd' || copy_done) && !discard && !st.flush().await {
            discard = true;
        }
        match frame.tag {
            b'd' if !copy_done => {
                let result = handle_copy_data(&mut st, frame.body);
                if discard {
                    continue;
                }
                match result {
                    Ok(Some(ev)) => st.pending.push(Ok(ev)),
                    Ok(None) => {}
                    Err(e) => {
                        st.fail(e).await;
                        return;
                    }
                }
                if (st.pending.len() >= BATCH || !st.frames.has_frame()) && !st.flush().await {
                    discard = true;
                }
            }
            b'c' => {
                copy_done = true;
                if !st.shared.closing.load(Ordering::Acquire) {
                    // The server ended the stream: answer so it can finish the command.
                    let (ack, _done) = oneshot::channel();
                    let _ = st.cmds.send(Cmd::CopyDone(ack));
                }
            }
            b'Z' if copy_done => return,
            b'E' => {
                let e = parse_error(&frame.body);
                if discard || st.shared.closing.load(Ordering::Acquire) {
                    return;
                }
                let err = if e.code == "42704" && e.message.starts_with("publication") {
                    SourceError::PublicationMissing {
                        names: vec![e.message.split('"').nth(1).unwrap_or_default().to_owned()],
                        database: String::new(),
                    }
                } else if e.severity == "FATAL" || e.code.starts_with("57") {
                    st.lost(format!("server ended the session: {e}"))
                } else {
                    SourceError::Server {
                        context: format!("streaming from slot {:?}", st.slot),
                        server: Box::new(e),
                    }
                };
                st.fail(err).await;
                return;
            }
            b'N' => super::wire::log_notice(&frame.body),
            _ => {}
        }
    }
}

fn handle_copy_data(
    st: &mut ReadState,
    mut body: Bytes,
) -> Result<Option<SourceEvent>, SourceError> {
    let short = |what: &str| SourceError::Protocol {
        context: format!("streaming from slot {:?}", st.slot),
        what: format!("short {what} message"),
    };
    if body.is_empty() {
        return Err(short("CopyData"));
    }
    match body.get_u8() {
        b'w' => {
            if body.len() < 24 {
                return Err(short("XLogData"));
            }
            let wal_start = body.get_u64();
            let _wal_end = body.get_u64();
            let _send_time = body.get_i64();
            st.note_received(wal_start);
            st.decoder.decode(Lsn(wal_start), &body)
        }
        b'k' => {
            if body.len() < 17 {
                return Err(short("keepalive"));
            }
            let wal_end = body.get_u64();
            let _send_time = body.get_i64();
            let reply = body.get_u8() == 1;
            st.note_received(wal_end);
            if reply {
                let _ = st.cmds.send(Cmd::Status(None));
            }
            Ok(Some(SourceEvent::Keepalive {
                wal_end: Lsn(wal_end),
            }))
        }
        other => Err(SourceError::Protocol {
            context: format!("streaming from slot {:?}", st.slot),
            what: format!("unknown CopyData message {:?}", char::from(other)),
        }),
    }
}

fn now_pg_us() -> i64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    unix - PG_EPOCH_OFFSET_US
}

fn status_update(buf: &mut BytesMut, lsn: u64) {
    let mut body = BytesMut::with_capacity(34);
    body.put_u8(b'r');
    body.put_u64(lsn); // written
    body.put_u64(lsn); // flushed
    body.put_u64(lsn); // applied
    body.put_i64(now_pg_us());
    body.put_u8(0);
    if let Ok(data) = frontend::CopyData::new(body.freeze()) {
        data.write(buf);
    }
}

async fn write_loop(
    mut w: WriteHalf<BoxStream>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(10)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = BytesMut::with_capacity(64);
    let send = async |w: &mut WriteHalf<BoxStream>, buf: &mut BytesMut| -> std::io::Result<()> {
        let out = buf.split();
        w.write_all(&out).await?;
        w.flush().await
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                status_update(&mut buf, shared.confirmed.load(Ordering::Acquire));
                if send(&mut w, &mut buf).await.is_err() {
                    // The reader reports the lost connection; keep serving acks with errors.
                    ticker.reset_after(Duration::from_secs(3600));
                }
            }
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(Cmd::Status(ack)) => {
                    status_update(&mut buf, shared.confirmed.load(Ordering::Acquire));
                    let r = send(&mut w, &mut buf).await;
                    if let Some(ack) = ack {
                        let _ = ack.send(r);
                    }
                }
                Some(Cmd::CopyDone(ack)) => {
                    status_update(&mut buf, shared.confirmed.load(Ordering::Acquire));
                    frontend::copy_done(&mut buf);
                    let _ = ack.send(send(&mut w, &mut buf).await);
                    // No status updates after CopyDone.
                    ticker.reset_after(Duration::from_secs(3600 * 24));
                }
                Some(Cmd::Terminate(ack)) => {
                    frontend::terminate(&mut buf);
                    let _ = send(&mut w, &mut buf).await;
                    let _ = w.shutdown().await;
                    let _ = ack.send(());
                    return;
                }
            }
        }
    }
}
