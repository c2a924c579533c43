//! Writing and committing sink transactions in the background, one at a time and in order,
//! while the pipeline receives and evaluates the next batch.
//!
//! The sink connection is the bottleneck of the data path, so it should never wait for the
//! rules or the decoder. The committer owns the [`Sink`]: a submitted job (the evaluated items
//! of a batch or of one chunk of a huge transaction, and the LSN to store if it ends at a source
//! commit) runs on its own task. At most one job is in flight; submitting the next waits for it,
//! which keeps memory bounded to two batches and the sink transaction's statements in stream
//! order. Only after a job's COMMIT has returned does its task confirm the LSN to the source.

use tokio::task::JoinHandle;

use crate::model::Lsn;
use crate::pipeline::PipelineError;
use crate::pipeline::metrics;
use crate::sink::{Sink, SinkItem};
use crate::source::Acker;

/// The last complete source transaction of a job.
#[derive(Clone, Copy, Debug)]
pub struct Persisted {
    pub lsn: Lsn,
    pub commit_time_us: i64,
}

/// One unit of sink work.
#[derive(Debug)]
pub struct Job {
    pub items: Vec<SinkItem>,
    /// Store this LSN and commit after writing; `None` leaves the sink transaction open (a chunk
    /// of a transaction that has not committed yet).
    pub commit: Option<Persisted>,
    /// The server's WAL end when the job was submitted, for the lag metric.
    pub server_end: Lsn,
    /// The relations of the rules version that evaluated `items`.
    pub relations: std::sync::Arc<crate::sink::RelationGraph>,
}

type Outcome = (Sink, Result<Option<Persisted>, PipelineError>);

enum State {
    Idle(Sink),
    Busy(JoinHandle<Outcome>),
    /// A job's task panicked and took the connection with it.
    Lost,
}

/// Set to `1` by the benchmark (never by users) to measure decoding and rules alone: jobs are
/// dropped instead of written, and their LSN is confirmed as if they had been committed.
pub const DISCARD_ENV: &str = "SLUICE_BENCHMARK_DISCARD_SINK";

/// The benchmark asked for a discarding sink ([`DISCARD_ENV`]). The current-row reads for
/// synchro's checksum are skipped then too: they exist only to be written with the edges.
pub fn discarding() -> bool {
    std::env::var(DISCARD_ENV).is_ok_and(|v| v == "1")
}

/// Owns the sink while jobs run in the background.
pub struct Committer {
    state: State,
    acker: Acker,
    discard: bool,
}

impl Committer {
    pub fn new(sink: Sink, acker: Acker) -> Self {
        let discard = discarding();
        if discard {
            tracing::warn!(
                "{DISCARD_ENV}=1: BENCHMARK MODE, nothing is written to the sink and every change is lost"
            );
        }
        Committer {
            state: State::Idle(sink),
            acker,
            discard,
        }
    }

    /// A job is in flight.
    pub fn busy(&self) -> bool {
        matches!(self.state, State::Busy(_))
    }

    /// Waits for the job in flight, if any, and returns what it committed. Cancel-safe: until
    /// the job finishes nothing changes, so it can sit in a `select!`.
    pub async fn wait(&mut self) -> Result<Option<Persisted>, PipelineError> {
        let State::Busy(handle) = &mut self.state else {
            return Ok(None);
        };
        let joined = handle.await;
        match joined {
            Ok((sink, result)) => {
                self.state = State::Idle(sink);
                result
            }
            Err(e) => {
                self.state = State::Lost;
                Err(PipelineError::Internal(format!(
                    "the sink task failed: {e}"
                )))
            }
        }
    }

    /// Starts `job` once the one in flight has finished. Returns what that one committed.
    pub async fn submit(&mut self, job: Job) -> Result<Option<Persisted>, PipelineError> {
        let previous = self.wait().await?;
        let State::Idle(mut sink) = std::mem::replace(&mut self.state, State::Lost) else {
            return Err(PipelineError::Internal(
                "the sink connection is gone".into(),
            ));
        };
        let acker = self.acker.clone();
        let discard = self.discard;
        self.state = State::Busy(tokio::spawn(async move {
            let result = if discard {
                Ok(job.commit.inspect(|p| {
                    acker.confirm(p.lsn);
                    metrics::record_confirmed(p.lsn);
                }))
            } else {
                run(&mut sink, job, &acker).await
            };
            (sink, result)
        }));
        Ok(previous)
    }

    /// The sink, for work that must not overlap a job (re-bucketing, recording a rules version,
    /// shutdown): waits for the job in flight first.
    pub async fn sink(&mut self) -> Result<&mut Sink, PipelineError> {
        self.wait().await?;
        match &mut self.state {
            State::Idle(sink) => Ok(sink),
            _ => Err(PipelineError::Internal(
                "the sink connection is gone".into(),
            )),
        }
    }
}

async fn run(sink: &mut Sink, job: Job, acker: &Acker) -> Result<Option<Persisted>, PipelineError> {
    let started = std::time::Instant::now();
    let rows = job.items.len();
    if rows > 0 {
        sink.set_relations(job.relations);
        let stats = sink.write(&job.items, true).await?;
        metrics::record_write(stats, rows, started.elapsed());
    }
    let Some(p) = job.commit else {
        return Ok(None);
    };
    sink.commit(p.lsn).await?;
    acker.confirm(p.lsn);
    metrics::record_confirmed(p.lsn);
    Ok(Some(p))
}
