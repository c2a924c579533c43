//! Previewing a rules change: a candidate version evaluated over the current rows of the
//! published tables and compared with the memberships stored in the sink — what the active rules
//! produced — without writing anything. Behind `sluice diff`, `POST /rules/preview` and the
//! `reload.preview_max_error_rate` gate.
//!
//! The rows are read as the snapshot reads them ([`TableReader`]: keyset chunks, the
//! publication's row filter and columns) inside one `REPEATABLE READ READ ONLY` transaction, so
//! every table is seen at one point in time and nothing on the source is locked or changed. Each
//! chunk goes through the rules and the transform exactly as the stream's changes do (record ids,
//! soft deletes, per-row failures), its stored memberships are read in one query, and it is tallied
//! and forgotten ([`Tally`]): memory is bounded for any table size.
//!
//! It runs on connections of its own, never on the stream's: a preview that fails (a bad module,
//! a lost connection) fails its caller alone.
//!
//! Not modelled: cascades along relations (a related row is compared by its own buckets, and the
//! report notes each table concerned), rows changed after the sink's confirmed LSN (the stored
//! memberships lag them), and memberships of rows that no longer exist.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::model::Lsn;
use crate::pg::PgConfig;
use crate::pipeline::PipelineError;
use crate::pipeline::batcher::evaluate_all;
use crate::pipeline::config::{Config, FailurePolicy};
use crate::pipeline::preview_tally::{PreviewReport, ReportLimits, Tally};
use crate::pipeline::relations::relation_graph;
use crate::pipeline::transform::Transform;
use crate::rules::{RulesEngine, RulesModule, RulesWorker};
use crate::sink::schema::SIDECAR_TABLES;
use crate::sink::{RelationGraph, Sink, SinkItem};
use crate::source::catalog::{self, PublishedTable};
use crate::source::snapshot::{self, TableReader};

/// Example record ids per bucket and direction, unless asked otherwise.
pub const DEFAULT_EXAMPLES: usize = 5;
/// Failures listed, unless asked otherwise.
pub const DEFAULT_FAILURES: usize = 20;

/// Why a preview could not be made. The candidate's own failures on rows are not errors: they are
/// in the report.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("table {table} is not in publication {publication}; published tables: {published}")]
    UnknownTable {
        table: String,
        publication: String,
        published: String,
    },
    #[error(
        "{path} is not a rules module: give the path of a readable regular file that holds a \
         wasm32-wasip2 component (the sluice log says why this one is not)"
    )]
    NotAModule { path: String },
    #[error("the pipeline has not loaded its rules yet: try again in a moment")]
    NotReady,
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

/// What to preview, beyond the candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreviewOptions {
    /// Only this table (schema-qualified unless public).
    pub table: Option<String>,
    /// At most this many rows per table, in key order.
    pub limit: Option<u64>,
    /// Example record ids kept per bucket and direction.
    pub examples: usize,
    /// Failures listed.
    pub failures: usize,
}

impl Default for PreviewOptions {
    fn default() -> Self {
        PreviewOptions {
            table: None,
            limit: None,
            examples: DEFAULT_EXAMPLES,
            failures: DEFAULT_FAILURES,
        }
    }
}

/// Everything a preview needs: where the rows and the memberships are, and how `sluice run`
/// evaluates (limits, soft deletes, chunk and batch sizes).
pub struct Previewer {
    pub engine: RulesEngine,
    pub config: Config,
    pub source: PgConfig,
    pub sink: PgConfig,
}

impl Previewer {
    /// Compiles and validates a candidate (off the async threads). A path that does not hold a
    /// module is refused without saying more than that, as a reload is (the log has the detail).
    pub async fn load(
        &self,
        path: &Path,
        rules_config: &str,
    ) -> Result<Arc<RulesModule>, PreviewError> {
        let engine = self.engine.clone();
        let path = path.to_owned();
        let config = rules_config.to_owned();
        tokio::task::spawn_blocking(move || {
            let bytes = match engine.read_module(&path) {
                Ok(bytes) if bytes.starts_with(b"\0asm") => bytes,
                Ok(_) => return Err(not_a_module(&path, "no `\\0asm` header")),
                Err(e) => return Err(not_a_module(&path, &e.to_string())),
            };
            engine
                .load_named(&path.display().to_string(), &bytes, &config)
                .map_err(|e| PreviewError::Pipeline(e.into()))
        })
        .await
        .map_err(|e| PipelineError::Join(e.to_string()))?
    }

    /// Evaluates `module` over the current rows and compares with the stored memberships.
    pub async fn preview(
        &self,
        module: Arc<RulesModule>,
        options: &PreviewOptions,
    ) -> Result<PreviewReport, PreviewError> {
        let source = self
            .source
            .connect_sql()
            .await
            .map_err(PipelineError::from)?;
        snapshot::pin_settings(&source)
            .await
            .map_err(PipelineError::from)?;
        let published =
            catalog::published_tables(&source, &self.config.publication, SIDECAR_TABLES)
                .await
                .map_err(PipelineError::from)?;
        let tables = self.select(&published, options.table.as_deref())?;
        let relations = relation_graph(&module, &published).map_err(PipelineError::from)?;
        let sink_client = self.sink.connect_sql().await.map_err(PipelineError::from)?;
        let sink = Sink::new(sink_client, self.config.slot.clone());
        let mut walk = Walk {
            source: &source,
            sink: &sink,
            rules: RulesWorker::start(Arc::clone(&module))
                .await
                .map_err(PipelineError::from)?,
            tally: Tally::new(
                module.version(),
                options.limit,
                ReportLimits {
                    examples: options.examples,
                    failures: options.failures,
                },
            ),
            config: &self.config,
        };
        snapshot::begin(&source, None)
            .await
            .map_err(PipelineError::from)?;
        for table in tables {
            walk.table(table, &relations, &module, options.limit)
                .await?;
        }
        snapshot::end(&source).await.map_err(PipelineError::from)?;
        let report = walk.tally.finish();
        info!(
            version = report.version,
            rows = report.rows,
            failed = report.failed,
            buckets = report.buckets.len(),
            "previewed a rules version"
        );
        Ok(report)
    }

    fn select<'t>(
        &self,
        published: &'t [PublishedTable],
        only: Option<&str>,
    ) -> Result<Vec<&'t PublishedTable>, PreviewError> {
        let tables: Vec<&PublishedTable> = published
            .iter()
            .filter(|t| only.is_none_or(|name| t.schema.qualified_name() == name))
            .collect();
        match only {
            Some(table) if tables.is_empty() => Err(PreviewError::UnknownTable {
                table: table.to_owned(),
                publication: self.config.publication.clone(),
                published: published
                    .iter()
                    .map(|t| t.schema.qualified_name())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            _ => Ok(tables),
        }
    }
}

fn not_a_module(path: &Path, detail: &str) -> PreviewError {
    warn!(path = %path.display(), detail, "rules preview refused: the path does not hold a rules module");
    PreviewError::NotAModule {
        path: path.display().to_string(),
    }
}

/// One preview's walk over the tables.
struct Walk<'a> {
    source: &'a Client,
    sink: &'a Sink,
    rules: RulesWorker,
    tally: Tally,
    config: &'a Config,
}

impl Walk<'_> {
    /// Tallies `table`'s rows, at most `limit` of them, chunk by chunk.
    async fn table(
        &mut self,
        table: &PublishedTable,
        relations: &Arc<RelationGraph>,
        module: &RulesModule,
        limit: Option<u64>,
    ) -> Result<(), PipelineError> {
        let name = table.schema.qualified_name();
        let notes = self.notes(&name, relations).await?;
        self.tally.begin_table(&name, notes);
        let config = self.config;
        let soft_delete = |t: &str| config.soft_delete_column_for(t).map(str::to_owned);
        let transform = Transform {
            // Dead-letter: a failure becomes an item to report, never an error of the preview.
            policy: FailurePolicy::DeadLetter,
            rules_version: module.version().to_owned(),
            soft_delete: &soft_delete,
            rows: None,
            relations: Arc::clone(relations),
        };
        // One row past the limit tells whether the limit cut the table short.
        let chunk_rows = limit.map_or(self.config.snapshot.chunk_rows, |l| {
            self.config
                .snapshot
                .chunk_rows
                .min(usize::try_from(l.saturating_add(1)).unwrap_or(usize::MAX))
        });
        let mut reader = TableReader::new(table.clone(), None, chunk_rows, Lsn::ZERO);
        let mut seen = 0u64;
        while let Some(chunk) = reader.next_chunk(self.source).await? {
            let mut changes = chunk.changes;
            let cut = limit.is_some_and(|l| {
                let room = usize::try_from(l.saturating_sub(seen)).unwrap_or(usize::MAX);
                let cut = changes.len() > room;
                changes.truncate(room);
                cut
            });
            seen += changes.len() as u64;
            if !changes.is_empty() {
                let items = evaluate_all(
                    changes,
                    &mut self.rules,
                    &transform,
                    self.config.rules.batch_size,
                )
                .await?;
                self.compare(&name, items).await?;
            }
            if cut {
                self.tally.limited();
                break;
            }
        }
        Ok(())
    }

    /// What the comparison cannot model for `table`.
    async fn notes(
        &self,
        table: &str,
        relations: &RelationGraph,
    ) -> Result<Vec<String>, PipelineError> {
        let mut notes = Vec::new();
        if relations.involves(table) {
            notes.push(
                "the candidate's relations involve this table: memberships that would cascade \
                 along related rows are not modelled, each row is compared by its own buckets"
                    .to_owned(),
            );
        }
        if self.sink.has_related_state(table).await? {
            notes.push(
                "the stored memberships include what the active rules' relations cascade: rows \
                 may show leaving buckets they only inherit"
                    .to_owned(),
            );
        }
        Ok(notes)
    }

    /// Tallies one chunk's outcomes against the chunk's stored memberships.
    async fn compare(&mut self, table: &str, items: Vec<SinkItem>) -> Result<(), PipelineError> {
        let ids: Vec<&str> = items
            .iter()
            .filter_map(|item| match item {
                SinkItem::Record(r) => Some(r.record_id.as_str()),
                _ => None,
            })
            .collect();
        let stored = self.sink.memberships(table, &ids).await?;
        for item in &items {
            match item {
                SinkItem::Record(r) => {
                    let now = stored.get(&r.record_id).map_or(&[][..], Vec::as_slice);
                    self.tally.row(&r.table_name, &r.record_id, &r.buckets, now);
                }
                SinkItem::Failure(f) => self.tally.failure(
                    &f.table_name,
                    f.record_id.as_deref().unwrap_or(""),
                    &f.error_text,
                ),
                SinkItem::Truncate { .. } | SinkItem::Relations(_) => {}
            }
        }
        Ok(())
    }
}

/// The answer of `POST /rules/preview`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum PreviewOutcome {
    Done(PreviewReport),
    Rejected { reason: String },
}

/// Lets the admin listener preview once the pipeline has loaded its rules (the engine and the
/// settings come from there). Previews run on the caller's runtime, on their own connections.
#[derive(Clone, Default)]
pub struct PreviewHandle {
    previewer: Arc<OnceLock<Arc<Previewer>>>,
}

impl PreviewHandle {
    /// Makes previews possible; later calls are ignored.
    pub fn set(&self, previewer: Arc<Previewer>) {
        let _ = self.previewer.set(previewer);
    }

    /// Loads the module at `path` with `rules_config` (default: the configuration sluice was
    /// started with) and previews it.
    pub async fn preview(
        &self,
        path: &Path,
        rules_config: Option<String>,
        options: &PreviewOptions,
    ) -> PreviewOutcome {
        let run = async {
            let previewer = self.previewer.get().ok_or(PreviewError::NotReady)?;
            let text = match rules_config {
                Some(text) => text,
                None => previewer
                    .config
                    .rules_config_text()
                    .map_err(PipelineError::from)?,
            };
            let module = previewer.load(path, &text).await?;
            previewer.preview(module, options).await
        };
        match run.await {
            Ok(report) => PreviewOutcome::Done(report),
            Err(e) => {
                warn!(error = %e, "rules preview failed");
                PreviewOutcome::Rejected {
                    reason: e.to_string(),
                }
            }
        }
    }
}

/// `reload.preview_max_error_rate`: a candidate that fails on a larger share of the current rows
/// is refused before it sees a live change.
pub struct PreviewGate {
    pub previewer: Arc<Previewer>,
    pub max_error_rate: f64,
}

impl PreviewGate {
    /// `Err(reason)` when `module` fails on too many rows, or cannot be previewed at all (a
    /// version that was never checked is not let through).
    pub async fn check(&self, module: &Arc<RulesModule>) -> Result<(), String> {
        let options = PreviewOptions {
            failures: 3,
            examples: 0,
            ..PreviewOptions::default()
        };
        let report = self
            .previewer
            .preview(Arc::clone(module), &options)
            .await
            .map_err(|e| {
                format!(
                    "cannot preview the candidate for reload.preview_max_error_rate, so it is \
                     not activated: {e}"
                )
            })?;
        if report.error_rate <= self.max_error_rate {
            info!(
                rows = report.rows,
                failed = report.failed,
                "the candidate's preview is within reload.preview_max_error_rate"
            );
            return Ok(());
        }
        let first: Vec<String> = report
            .failures
            .iter()
            .map(|f| format!("{} {}: {}", f.table, f.record_id, f.message))
            .collect();
        Err(format!(
            "the candidate fails on {} of the {} current rows ({:.1}%), above \
             reload.preview_max_error_rate = {}; it never saw a live change. First failures: {}. \
             `sluice diff --module {}` lists them",
            report.failed,
            report.rows,
            report.error_rate * 100.0,
            self.max_error_rate,
            first.join("; "),
            module.label()
        ))
    }
}
