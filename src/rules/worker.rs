//! A rules instance on a thread of its own, for callers on an async runtime.
//!
//! Guest code must never run on a runtime thread:
//! - wasmtime-wasi's synchronous bindings (a guest's `println!`, a read of stdin) block on a
//!   future with the current runtime's handle, which panics inside a runtime ("Cannot start a
//!   runtime from within a runtime") and took the whole process down;
//! - a rule that loops until its deadline would stall everything else on the thread: the
//!   replication socket, the committer, the admin endpoints.
//!
//! So every call into a module from `sluice run` (init included) happens here, and the runtime
//! only awaits the answer.

use std::sync::Arc;
use std::sync::mpsc;

use tokio::sync::oneshot;

use crate::model::{Change, Outcome};

use super::error::RulesError;
use super::module::RulesModule;

/// A [`RulesInstance`](super::RulesInstance) owned by a dedicated thread. The thread ends when
/// the worker is dropped (after the call in flight, which its deadline bounds).
pub struct RulesWorker {
    module: Arc<RulesModule>,
    jobs: mpsc::Sender<Job>,
}

struct Job {
    changes: Vec<Change>,
    reply: oneshot::Sender<(Vec<Change>, Vec<Outcome>)>,
}

impl RulesWorker {
    /// Starts the thread and instantiates `module` there (running its `init`).
    pub async fn start(module: Arc<RulesModule>) -> Result<Self, RulesError> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let owned = Arc::clone(&module);
        std::thread::Builder::new()
            .name("sluice-rules".into())
            .spawn(move || {
                let mut instance = match owned.instantiate() {
                    Ok(instance) => instance,
                    Err(err) => {
                        let _ = ready_tx.send(Err(err));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                while let Ok(job) = job_rx.recv() {
                    let outcomes = instance.evaluate(&job.changes);
                    let _ = job.reply.send((job.changes, outcomes));
                }
            })
            .map_err(|err| RulesError::Worker {
                module: module.label().to_owned(),
                reason: format!("cannot start its thread: {err}"),
            })?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(RulesWorker { module, jobs }),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(stopped(&module)),
        }
    }

    /// The module version this worker runs.
    pub fn module(&self) -> &Arc<RulesModule> {
        &self.module
    }

    /// One outcome per change, in order, as
    /// [`RulesInstance::evaluate`](super::RulesInstance::evaluate) gives them; the changes come
    /// back with them. Fails only if the worker thread is gone.
    pub async fn evaluate(
        &mut self,
        changes: Vec<Change>,
    ) -> Result<(Vec<Change>, Vec<Outcome>), RulesError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { changes, reply })
            .map_err(|_| stopped(&self.module))?;
        answer.await.map_err(|_| stopped(&self.module))
    }
}

fn stopped(module: &RulesModule) -> RulesError {
    RulesError::Worker {
        module: module.label().to_owned(),
        reason: "its thread stopped unexpectedly".into(),
    }
}
