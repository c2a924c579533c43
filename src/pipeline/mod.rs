//! The pipeline: joins source, rules and sink, and owns the exactly-once protocol between them.
//!
//! Data flows source → rules → sink. The only thing that flows back is an LSN: after the sink has
//! committed a batch together with its last commit's end LSN, the pipeline tells the source to
//! confirm that LSN to PostgreSQL. On restart the stored LSN is the truth: transactions at or
//! below it are skipped.

pub mod admin;
pub mod admin_action;
pub mod admin_auth;
pub mod batcher;
pub mod checksums;
pub mod committer;
pub mod config;
pub mod failover;
pub mod failure_log;
pub mod forget;
pub mod join;
pub mod lag;
pub mod leader;
pub mod metrics;
pub mod module_watch;
pub mod payload;
pub mod preview;
pub mod preview_tally;
pub mod progress;
pub mod rebucket;
pub mod reconnect;
pub mod refused;
pub mod relations;
pub mod reload;
pub mod replay;
pub mod snapshot;
pub mod status;
pub mod stream;
pub mod transform;
pub mod vanished;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::model::Lsn;
use crate::pg::PgConfig;
use crate::rules::{RuleLimits, RulesEngine, RulesModule};
use crate::sink::schema::SIDECAR_TABLES;
use crate::sink::{Sink, SinkError};
use crate::source::SourceError;
use crate::source::catalog::{self, CatalogError};
use crate::source::snapshot::SnapshotError;
use config::Config;
use transform::HaltOnFailure;

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Source(Box<SourceError>),
    #[error(transparent)]
    Catalog(Box<CatalogError>),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
    #[error(transparent)]
    Halt(#[from] HaltOnFailure),
    #[error(transparent)]
    Pg(#[from] crate::pg::PgError),
    #[error(transparent)]
    Relations(#[from] relations::RelationError),
    #[error(transparent)]
    Claim(#[from] crate::source::ClaimError),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("invalid database URL: {0}")]
    Url(String),
    #[error(
        "wal_level is {0:?} on the source server; logical replication needs `wal_level = logical` in postgresql.conf (or `ALTER SYSTEM SET wal_level = logical;`) and a server restart"
    )]
    WalLevel(String),
    #[error(
        "replication slot {slot:?} no longer exists, but sync_wal_position says changes up to {lsn} were already consumed through it: the WAL in between is gone. To re-snapshot, run `DELETE FROM sync_wal_position WHERE slot_name = '{slot}'; DELETE FROM sluice_snapshot_progress WHERE slot_name = '{slot}';` in the sink database and restart sluice"
    )]
    SlotDropped { slot: String, lsn: Lsn },
    #[error(
        "replication slot {slot:?} has been invalidated by the server (wal_status = lost, usually max_slot_wal_keep_size): the WAL it needed is gone. Drop it with `SELECT pg_drop_replication_slot('{slot}');`, then re-snapshot: `DELETE FROM sync_wal_position WHERE slot_name = '{slot}'; DELETE FROM sluice_snapshot_progress WHERE slot_name = '{slot}';` in the sink database, and restart sluice"
    )]
    SlotInvalidated { slot: String },
    #[error(
        "replication slot {slot:?} does not exist on {server}, which is a standby in recovery, but sync_wal_position says changes up to {lsn} were consumed through it: sluice streams from the primary. Point --database-url at the primary; after a failover, promote this standby first (its copy of the slot exists only if it was a failover slot synchronized to it: PostgreSQL 17+ with sync_replication_slots = on; see the README's \"Failover slots\")"
    )]
    SlotMissingOnStandby {
        slot: String,
        server: String,
        lsn: Lsn,
    },
    #[error(
        "replication slot {slot:?} does not exist on {server}, a promoted standby (timeline {timeline}), but sync_wal_position says changes up to {lsn} were consumed through it on the old primary: the slot was not synchronized to this server before its promotion (that needs PostgreSQL 17+, sync_replication_slots = on on the standby, and the slot synced and not temporary when promoted; see the README's \"Failover slots\"). If the old primary still runs, point --database-url back at it; otherwise re-snapshot: run `DELETE FROM sync_wal_position WHERE slot_name = '{slot}'; DELETE FROM sluice_snapshot_progress WHERE slot_name = '{slot}';` in the sink database and restart sluice"
    )]
    SlotMissingAfterPromotion {
        slot: String,
        server: String,
        timeline: u32,
        lsn: Lsn,
    },
    #[error(
        "replication slot {slot:?} on {server} is a failover copy that this standby keeps in sync with its primary, usable only after promotion: point --database-url at the primary, or promote this standby (`SELECT pg_promote();`) and start sluice again"
    )]
    SlotSyncedOnStandby { slot: String, server: String },
    #[error(
        "replication slot {slot:?} is in use by another connection (pid {pid}): is another sluice running with the same slot? Stop it, or use a different --slot"
    )]
    SlotBusy { slot: String, pid: i32 },
    #[error(
        "replication slot {slot:?} uses output plugin {plugin:?}, not pgoutput: choose another --slot name"
    )]
    SlotPlugin { slot: String, plugin: String },
    #[error(
        "replication slot {slot:?} belongs to database {database:?}, not the one sluice streams from: choose another --slot name (slots are shared by every database of a server)"
    )]
    SlotOtherDatabase { slot: String, database: String },
    #[error("blocking task failed: {0}")]
    Join(String),
    /// Reading current rows for checksums lost its connection (server errors are not fatal:
    /// see `checksums::fill`).
    #[error("reading the current rows of {table} for synchro's checksum: {source}")]
    RowRead {
        table: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl From<SourceError> for PipelineError {
    fn from(e: SourceError) -> Self {
        PipelineError::Source(Box::new(e))
    }
}

impl From<CatalogError> for PipelineError {
    fn from(e: CatalogError) -> Self {
        PipelineError::Catalog(Box::new(e))
    }
}

impl PipelineError {
    /// Another process took over the slot (see [`leader`]).
    pub fn is_fenced(&self) -> bool {
        matches!(self, PipelineError::Sink(SinkError::Fenced { .. }))
    }

    /// A lost connection that reconnecting can cure, as opposed to a problem that needs a human.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Source(e) => match &**e {
                SourceError::ConnectionLost { .. }
                | SourceError::Connect { .. }
                | SourceError::Closed
                | SourceError::Io { .. }
                // The old walsender may outlive a cut connection until wal_sender_timeout.
                | SourceError::SlotActive { .. } => true,
                // A server going down resets connections in the middle of the handshake; a
                // certificate problem is InvalidData and stays fatal.
                SourceError::TlsHandshake { source, .. } => matches!(
                    source.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::UnexpectedEof
                        | std::io::ErrorKind::BrokenPipe
                ),
                // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now (a server
                // still recovering), class 08 connection exceptions.
                SourceError::Server { server, .. } => {
                    server.code.starts_with("57P") || server.code.starts_with("08")
                }
                _ => false,
            },
            PipelineError::Catalog(e) => match &**e {
                CatalogError::Sql { source, .. } => crate::sink::session_ended(source),
                _ => false,
            },
            PipelineError::SlotBusy { .. } => true,
            PipelineError::RowRead { .. } => true,
            PipelineError::Pg(_) => true,
            PipelineError::Sink(e) => e.is_connection_lost(),
            // Every SQL step of (re)connecting can meet the same cut connection: reading
            // snapshot rows, importing the exported snapshot, taking over the slot.
            PipelineError::Snapshot(
                SnapshotError::Read { source, .. } | SnapshotError::Import { source, .. },
            ) => crate::sink::session_ended(source),
            PipelineError::Claim(crate::source::ClaimError::Sql { source, .. }) => {
                crate::sink::session_ended(source)
            }
            _ => false,
        }
    }
}

/// Liveness and readiness, read by the admin listener.
#[derive(Debug, Default)]
pub struct Health {
    /// Streaming right now (readiness).
    pub streaming: AtomicBool,
    /// Has streamed at least once: from then on, a lost connection is retried rather than fatal.
    pub has_streamed: AtomicBool,
    /// Waiting for another process to give up the slot (see [`leader`]).
    pub standby: AtomicBool,
}

/// Everything that outlives a reconnect.
pub struct Context {
    pub config: Config,
    pub source: PgConfig,
    pub sink: PgConfig,
    /// The active rules version; replaced by hot reload.
    pub active: ArcSwap<RulesModule>,
    pub module_path: String,
    pub health: Arc<Health>,
    pub shutdown: watch::Receiver<bool>,
    /// Validated versions waiting to be swapped in at a transaction boundary.
    pub swaps: tokio::sync::Mutex<mpsc::Receiver<reload::Swap>>,
    /// Where rollbacks are sent (they take the same path as any other swap).
    pub swap_tx: mpsc::Sender<reload::Swap>,
    pub rebuckets: tokio::sync::Mutex<mpsc::Receiver<rebucket::RebucketRequest>>,
    /// Requests to forget a table that left the publication.
    pub forgets: tokio::sync::Mutex<mpsc::Receiver<forget::ForgetRequest>>,
    /// Requests to replay dead letters.
    pub replays: tokio::sync::Mutex<mpsc::Receiver<replay::ReplayRequest>>,
    /// The leader epoch sink commits are fenced with (0: none yet).
    pub epoch: AtomicI64,
    /// This process created `sync_changelog` and `sync_bucket_edges` (see
    /// `sink::deferred_indexes`); set by the first schema check, in [`leader::lead`].
    pub created_sidecar: AtomicBool,
}

/// What operators and triggers use to steer a running pipeline.
#[derive(Clone)]
pub struct Handles {
    pub reload: reload::ReloadHandle,
    pub rebucket: rebucket::RebucketHandle,
    pub forget: forget::ForgetHandle,
    pub replay: replay::ReplayHandle,
    /// Previews of a candidate rules version (usable once [`run`] has loaded the rules).
    pub preview: preview::PreviewHandle,
}

/// The pipeline's ends of the control channels.
pub struct Receivers {
    reload: mpsc::Receiver<reload::ReloadRequest>,
    rebucket: mpsc::Receiver<rebucket::RebucketRequest>,
    forget: mpsc::Receiver<forget::ForgetRequest>,
    replay: mpsc::Receiver<replay::ReplayRequest>,
}

/// Creates the control channels: handles for the admin listener and signals, receivers for
/// [`run`].
pub fn controls() -> (Handles, Receivers) {
    let (reload, reload_rx) = reload::channel();
    let (rebucket, rebucket_rx) = rebucket::channel();
    let (forget, forget_rx) = forget::channel();
    let (replay, replay_rx) = replay::channel();
    (
        Handles {
            reload,
            rebucket,
            forget,
            replay,
            preview: preview::PreviewHandle::default(),
        },
        Receivers {
            reload: reload_rx,
            rebucket: rebucket_rx,
            forget: forget_rx,
            replay: replay_rx,
        },
    )
}

/// Loads the rules module (off the async threads: compiling takes a while).
pub async fn load_rules(config: &Config) -> Result<(RulesEngine, Arc<RulesModule>), PipelineError> {
    let limits = RuleLimits {
        batch_deadline: Duration::from_millis(config.rules.deadline_ms),
        memory_bytes: config.rules.memory_mib << 20,
        max_buckets_per_change: config.rules.max_buckets_per_change,
        max_module_bytes: config.rules.max_module_mib.saturating_mul(1 << 20),
        ..RuleLimits::default()
    };
    let path = config.rules.module.clone().ok_or_else(|| {
        config::ConfigError::Invalid("no rules module: pass --module PATH".into())
    })?;
    let rules_config = config.rules_config_text()?;
    let cache = crate::rules::ModuleCache::from_setting(config.rules.cache_dir.as_deref(), |k| {
        std::env::var(k).ok()
    });
    tokio::task::spawn_blocking(move || {
        let engine = RulesEngine::with_cache(limits, cache)?;
        let module = engine.load_file(&path, &rules_config)?;
        Ok::<_, PipelineError>((engine, module))
    })
    .await
    .map_err(|e| PipelineError::Join(e.to_string()))?
}

/// Runs until shutdown or a fatal error, reconnecting with capped exponential backoff after
/// lost connections. `handles`/`receivers` come from [`controls`].
pub async fn run(
    config: Config,
    health: Arc<Health>,
    shutdown: watch::Receiver<bool>,
    handles: Handles,
    receivers: Receivers,
) -> Result<(), PipelineError> {
    config.validate()?;
    let mut config = config;
    // Absolute from here on: sluice_rule_versions records where each version came from, and a
    // relative path would say nothing once read from another directory.
    if let Some(module) = &config.rules.module {
        config.rules.module = Some(std::path::absolute(module).unwrap_or_else(|_| module.clone()));
    }
    metrics::describe();
    leader::describe();
    let source_url = config.database_url.clone().unwrap_or_default();
    let source = PgConfig::parse(&source_url).map_err(|e| PipelineError::Url(e.to_string()))?;
    let mut sink = match &config.sink_url {
        Some(url) => PgConfig::parse(url).map_err(|e| PipelineError::Url(e.to_string()))?,
        None => source.clone(),
    };
    if let Some(schema) = &config.sidecar_schema {
        crate::sink::search_path::pin(&mut sink, schema);
    }
    let (engine, module) = load_rules(&config).await?;
    let code = module.code_load();
    info!(
        version = module.version(),
        code = code.source.as_str(),
        code_ms = code.elapsed.as_millis() as u64,
        "rules module loaded"
    );
    metrics::record_rules_version(None, module.version());
    let module_file = config.rules.module.clone().unwrap_or_default();
    let module_path = module_file.display().to_string();

    let reload_handle = handles.reload;
    let reload_rx = receivers.reload;
    let (swap_tx, swap_rx) = mpsc::channel(4);
    let rules_config = config.rules_config_text()?;
    let previewer = Arc::new(preview::Previewer {
        engine: engine.clone(),
        config: config.clone(),
        source: source.clone(),
        sink: sink.clone(),
    });
    handles.preview.set(Arc::clone(&previewer));
    let gate = config
        .reload
        .preview_max_error_rate
        .map(|max_error_rate| preview::PreviewGate {
            previewer,
            max_error_rate,
        });
    let (active_path, active_path_rx) = watch::channel(module_file.clone());
    tokio::spawn(reload::validator(
        engine,
        active_path,
        rules_config.clone(),
        (module.version().to_owned(), rules_config),
        gate,
        reload_rx,
        swap_tx.clone(),
    ));
    // Kept alive for the whole run: dropping the watcher stops it.
    let _watcher = if config.reload.watch {
        match module_watch::watch_module(
            active_path_rx,
            Duration::from_millis(config.reload.debounce_ms),
            reload_handle.clone(),
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                warn!(error = %e, module = %module_path, "cannot watch the module file; reload with SIGHUP or POST /rules/reload instead");
                None
            }
        }
    } else {
        None
    };
    spawn_sighup(reload_handle.clone());

    let ctx = Context {
        config,
        source,
        sink,
        active: ArcSwap::new(module),
        module_path,
        health,
        shutdown,
        swaps: tokio::sync::Mutex::new(swap_rx),
        swap_tx,
        rebuckets: tokio::sync::Mutex::new(receivers.rebucket),
        forgets: tokio::sync::Mutex::new(receivers.forget),
        replays: tokio::sync::Mutex::new(receivers.replay),
        epoch: AtomicI64::new(0),
        created_sidecar: AtomicBool::new(false),
    };
    loop {
        let Some(mut lead) = leader::lead(&ctx).await? else {
            return Ok(());
        };
        ctx.epoch.store(lead.epoch, Ordering::Relaxed);
        let result = tokio::select! {
            r = sessions(&ctx) => r,
            _ = lead.fenced() => Err(PipelineError::Sink(SinkError::Fenced {
                slot: ctx.config.slot.clone(),
                epoch: lead.epoch,
            })),
        };
        match result {
            Err(e) if e.is_fenced() => leader::fenced(&ctx.health, &e),
            other => {
                lead.release().await;
                return other;
            }
        }
    }
}

/// Streams as the leader until shutdown or a fatal error, reconnecting with capped exponential
/// backoff after lost connections, and logging the status line meanwhile.
async fn sessions(ctx: &Context) -> Result<(), PipelineError> {
    let status_line = status::log_every(
        Duration::from_millis(ctx.config.status_log_interval_ms),
        || ctx.active.load().version().to_owned(),
        || ctx.health.streaming.load(Ordering::Relaxed),
    );
    tokio::pin!(status_line);
    let mut backoff =
        reconnect::Backoff::new(Duration::from_millis(ctx.config.reconnect.max_backoff_ms));
    loop {
        let session = tokio::select! {
            result = stream::session(ctx) => result,
            () = &mut status_line => Ok(()),
        };
        match session {
            Ok(()) => return Ok(()),
            Err(e)
                if e.is_transient()
                    && ctx.health.has_streamed.load(Ordering::Relaxed)
                    && !*ctx.shutdown.borrow() =>
            {
                // A session that got as far as streaming ends one outage: the next starts short.
                if ctx.health.streaming.swap(false, Ordering::Relaxed) {
                    backoff.reset();
                }
                ::metrics::counter!(metrics::RECONNECTS).increment(1);
                let wait = backoff.next_wait();
                warn!(error = %reconnect::with_causes(&e), retry_in_ms = wait.as_millis() as u64, "connection lost; reconnecting and resuming from the stored LSN");
                let mut shutdown = ctx.shutdown.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// SIGHUP reloads the rules module from its path.
fn spawn_sighup(handle: reload::ReloadHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    info!("SIGHUP: reloading the rules module");
                    handle.nudge(reload::Trigger::Sighup);
                }
            });
        }
        Err(e) => warn!(error = %e, "cannot listen for SIGHUP"),
    }
}

/// Checks the source server, the publication and its tables before anything is created: the
/// tables to stream, and those refused (see `pipeline::refused`).
pub async fn preflight(
    client: &tokio_postgres::Client,
    config: &Config,
) -> Result<catalog::Publication, PipelineError> {
    let wal_level: String = client
        .query_one("SELECT current_setting('wal_level')", &[])
        .await
        .map_err(|e| SinkError::sql("reading wal_level", e))?
        .get(0);
    if wal_level != "logical" {
        return Err(PipelineError::WalLevel(wal_level));
    }
    if config.create_publication
        && !catalog::publication_exists(client, &config.publication).await?
    {
        let tables: Vec<String> = config.tables.iter().map(|t| quote_qualified(t)).collect();
        let sql = format!(
            "CREATE PUBLICATION {} FOR TABLE {}",
            catalog::quote_ident(&config.publication),
            tables.join(", ")
        );
        client.batch_execute(&sql).await.map_err(|e| {
            SinkError::sql(format!("creating publication {}", config.publication), e)
        })?;
        info!(publication = %config.publication, tables = ?config.tables, "created the publication");
    }
    Ok(catalog::published_tables_split(client, &config.publication, SIDECAR_TABLES).await?)
}

/// `schema.table` or `table`, each part quoted.
fn quote_qualified(name: &str) -> String {
    match name.split_once('.') {
        Some((schema, table)) => format!(
            "{}.{}",
            catalog::quote_ident(schema),
            catalog::quote_ident(table)
        ),
        None => catalog::quote_ident(name),
    }
}

/// Opens the sink and makes sure its tables exist.
pub async fn open_sink(ctx: &Context) -> Result<Sink, PipelineError> {
    let client = ctx.sink.connect_sql().await?;
    // The flush LSN is confirmed to the source as soon as the sink's COMMIT returns. With the
    // server's `synchronous_commit = off`, a crash of the sink server could then lose a batch
    // whose WAL the slot has already released: the commit must be durable before it returns.
    //
    // Generic plans: the sink's statements take arrays of thousands of keys, and a custom plan
    // would estimate every element (measurably slow) and could pick a hash join over the whole
    // edge table for a large batch. The generic plans are index probes.
    client
        .batch_execute("SET synchronous_commit = on; SET plan_cache_mode = force_generic_plan")
        .await
        .map_err(|e| SinkError::sql("configuring the sink session", e))?;
    let mut sink = Sink::new(client, ctx.config.slot.clone());
    sink.ensure_schema().await?;
    if ctx.created_sidecar.load(Ordering::Relaxed) {
        sink.set_created_sidecar();
    }
    leader::fence(ctx, &mut sink).await?;
    Ok(sink)
}
