//! Hot reload of the rules: triggers, validation off the hot path, and the hand-over to the
//! stream loop, which swaps versions only between source transactions.
//!
//! Every trigger (the module file changing on disk, SIGHUP, `POST /rules/reload`) becomes a
//! [`ReloadRequest`] on one channel, so they all take the same path:
//! 1. read the file and hash it; a file watch whose content hash did not change is ignored;
//! 2. compile, type-check against the world and run `init` on a blocking thread — a failure at
//!    any step rejects the version and the old one keeps running;
//! 3. with `reload.preview_max_error_rate`, preview it over the current rows and refuse it when
//!    it fails on too large a share of them (`pipeline::preview`);
//! 4. hand the validated module to the stream loop, which finishes the batch in flight with the
//!    old version, swaps at the next transaction boundary, records the version with its first
//!    LSN, and answers the requester.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics::{counter, histogram};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::model::Lsn;
use crate::rules::{RulesEngine, RulesModule};

pub const RELOADS: &str = "sluice_rules_reloads_total";
pub const RELOAD_SECONDS: &str = "sluice_rules_reload_seconds";
pub const ROLLBACKS: &str = "sluice_rules_rollbacks_total";

/// What triggered a reload, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    File,
    Sighup,
    Api,
    Rollback,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::File => "file",
            Trigger::Sighup => "sighup",
            Trigger::Api => "api",
            Trigger::Rollback => "rollback",
        }
    }
}

/// The outcome reported to whoever asked for a reload.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum ReloadOutcome {
    /// The new version evaluates every transaction from `first_lsn` on.
    Activated {
        version: String,
        previous: String,
        first_lsn: String,
        compile_ms: u64,
        latency_ms: u64,
    },
    /// Same bytes and configuration as the active version: nothing to do.
    Unchanged { version: String },
    /// Validation failed; the old version keeps running.
    Rejected { reason: String, active: String },
}

/// A request to load a module (the current path when `module` is None).
pub struct ReloadRequest {
    pub module: Option<PathBuf>,
    pub rules_config: Option<String>,
    pub trigger: Trigger,
    pub reply: Option<oneshot::Sender<ReloadOutcome>>,
}

/// A validated module on its way to the stream loop.
pub struct Swap {
    pub module: Arc<RulesModule>,
    pub trigger: Trigger,
    pub requested_at: Instant,
    pub compile: Duration,
    pub reply: Option<oneshot::Sender<ReloadOutcome>>,
}

impl Swap {
    /// Called by the stream loop when the validated version cannot go live after all (its
    /// relations do not fit the published tables); `active` keeps running.
    pub fn refused(self, reason: String, active: &str) {
        let reason = crate::error_text::one_line(&reason);
        counter!(RELOADS, "result" => "rejected", "trigger" => self.trigger.as_str()).increment(1);
        if let Some(reply) = self.reply {
            let _ = reply.send(ReloadOutcome::Rejected {
                reason,
                active: active.to_owned(),
            });
        }
    }

    /// Called by the stream loop once the new version is active.
    pub fn activated(self, previous: &str, first_lsn: Lsn) {
        let latency = self.requested_at.elapsed();
        histogram!(RELOAD_SECONDS).record(latency.as_secs_f64());
        counter!(RELOADS, "result" => "activated", "trigger" => self.trigger.as_str()).increment(1);
        info!(
            version = self.module.version(),
            previous,
            first_lsn = %first_lsn,
            trigger = self.trigger.as_str(),
            compile_ms = self.compile.as_millis() as u64,
            code = self.module.code_load().source.as_str(),
            latency_ms = latency.as_millis() as u64,
            "rules version activated"
        );
        crate::pipeline::metrics::record_rules_version(Some(previous), self.module.version());
        if let Some(reply) = self.reply {
            let _ = reply.send(ReloadOutcome::Activated {
                version: self.module.version().to_owned(),
                previous: previous.to_owned(),
                first_lsn: first_lsn.to_string(),
                compile_ms: self.compile.as_millis() as u64,
                latency_ms: latency.as_millis() as u64,
            });
        }
    }
}

/// Handle for triggers: a cheap clone of the request channel.
#[derive(Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<ReloadRequest>,
}

impl ReloadHandle {
    /// Asks for a reload and waits for the outcome.
    pub async fn reload(
        &self,
        module: Option<PathBuf>,
        rules_config: Option<String>,
        trigger: Trigger,
    ) -> ReloadOutcome {
        let (reply, rx) = oneshot::channel();
        let request = ReloadRequest {
            module,
            rules_config,
            trigger,
            reply: Some(reply),
        };
        if self.tx.send(request).await.is_err() {
            return ReloadOutcome::Rejected {
                reason: "the pipeline is shutting down".into(),
                active: String::new(),
            };
        }
        rx.await.unwrap_or(ReloadOutcome::Rejected {
            reason: "the pipeline stopped before the new version became active".into(),
            active: String::new(),
        })
    }

    /// Fire and forget (file watch, SIGHUP).
    pub fn nudge(&self, trigger: Trigger) {
        let _ = self.tx.try_send(ReloadRequest {
            module: None,
            rules_config: None,
            trigger,
            reply: None,
        });
    }
}

pub fn channel() -> (ReloadHandle, mpsc::Receiver<ReloadRequest>) {
    let (tx, rx) = mpsc::channel(16);
    (ReloadHandle { tx }, rx)
}

/// Validates requests and forwards good modules to the stream loop. Runs until the request
/// channel closes.
///
/// `active_path` starts as the configured module path and follows the file of the last
/// validated version, so that SIGHUP and the file watch reload that file.
pub async fn validator(
    engine: RulesEngine,
    active_path: watch::Sender<PathBuf>,
    mut config: String,
    mut active: (String, String),
    gate: Option<crate::pipeline::preview::PreviewGate>,
    mut requests: mpsc::Receiver<ReloadRequest>,
    swaps: mpsc::Sender<Swap>,
) {
    let configured = active_path.borrow().clone();
    while let Some(req) = requests.recv().await {
        let requested_at = Instant::now();
        let candidate_path = match &req.module {
            Some(p) => std::path::absolute(p).unwrap_or_else(|_| p.clone()),
            None => active_path.borrow().clone(),
        };
        let candidate_config = req.rules_config.clone().unwrap_or_else(|| config.clone());
        let engine2 = engine.clone();
        let read_path = candidate_path.clone();
        let read = tokio::task::spawn_blocking(move || engine2.read_module(&read_path)).await;
        let bytes = match read {
            Ok(Ok(bytes)) if bytes.starts_with(b"\0asm") => bytes,
            Ok(Ok(_)) => {
                let detail = "not a WebAssembly file (no `\\0asm` header)";
                refuse_file(req, &candidate_path, detail, &active.0);
                continue;
            }
            Ok(Err(e)) => {
                refuse_file(req, &candidate_path, &e.to_string(), &active.0);
                continue;
            }
            Err(e) => {
                reject(req, format!("validation task failed: {e}"), &active.0);
                continue;
            }
        };
        let version = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if version == active.0 && candidate_config == active.1 {
            if req.trigger != Trigger::File {
                info!(
                    version,
                    trigger = req.trigger.as_str(),
                    "reload requested but the module and its configuration are unchanged"
                );
            }
            counter!(RELOADS, "result" => "unchanged", "trigger" => req.trigger.as_str())
                .increment(1);
            if let Some(reply) = req.reply {
                let _ = reply.send(ReloadOutcome::Unchanged { version });
            }
            continue;
        }
        let started = Instant::now();
        let engine2 = engine.clone();
        let cfg = candidate_config.clone();
        let label = candidate_path.display().to_string();
        let loaded =
            tokio::task::spawn_blocking(move || engine2.load_named(&label, &bytes, &cfg)).await;
        let compile = started.elapsed();
        let module = match loaded {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                reject(req, e.to_string(), &active.0);
                continue;
            }
            Err(e) => {
                reject(req, format!("validation task failed: {e}"), &active.0);
                continue;
            }
        };
        if let Some(gate) = &gate
            && let Err(reason) = gate.check(&module).await
        {
            reject(req, reason, &active.0);
            continue;
        }
        if candidate_path != configured {
            warn!(active = %candidate_path.display(), configured = %configured.display(),
                "the active rules module is not the configured one: a restart loads the configured path; change --module (or rules.module) to keep this version");
        }
        active_path.send_if_modified(|p| {
            let moved = *p != candidate_path;
            *p = candidate_path;
            moved
        });
        config = candidate_config.clone();
        active = (module.version().to_owned(), candidate_config);
        let swap = Swap {
            module,
            trigger: req.trigger,
            requested_at,
            compile,
            reply: req.reply,
        };
        if swaps.send(swap).await.is_err() {
            return;
        }
    }
}

/// A path that does not hold a module: the log says why, the reply only that it is not one, so
/// that whoever may send reload requests learns nothing about files that are not modules
/// (whether a path exists, is a directory, what its bytes hash to).
fn refuse_file(req: ReloadRequest, path: &Path, detail: &str, active: &str) {
    warn!(path = %path.display(), detail, trigger = req.trigger.as_str(),
        "rules reload refused: the path does not hold a rules module");
    reject(
        req,
        format!(
            "{} is not a rules module: give the path of a readable regular file that holds a \
             wasm32-wasip2 component (the sluice log says why this one is not)",
            path.display()
        ),
        active,
    );
}

fn reject(req: ReloadRequest, reason: String, active: &str) {
    // A compiler's or a guest's message may span lines; a log line and a reply are one line.
    let reason = crate::error_text::one_line(&reason);
    warn!(reason = %reason, trigger = req.trigger.as_str(), active, "rules reload rejected; the active version keeps running");
    counter!(RELOADS, "result" => "rejected", "trigger" => req.trigger.as_str()).increment(1);
    if let Some(reply) = req.reply {
        let _ = reply.send(ReloadOutcome::Rejected {
            reason,
            active: active.to_owned(),
        });
    }
}
