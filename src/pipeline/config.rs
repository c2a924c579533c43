//! `sluice run` settings: a TOML file, overridden by environment variables, overridden by flags.
//!
//! Unknown keys are errors, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// What to do with a change the rules could not evaluate.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Record it in `sync_rule_failures` and keep streaming.
    #[default]
    DeadLetter,
    /// Stop before the failed transaction's LSN is stored.
    Halt,
}

/// The whole configuration of one pipeline.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Source database (`SLUICE_DATABASE_URL`).
    pub database_url: Option<String>,
    /// Where the sidecar tables live; the source database when unset (`SLUICE_SINK_URL`).
    pub sink_url: Option<String>,
    /// The schema of the sidecar tables in the sink database (`SLUICE_SIDECAR_SCHEMA`). When set,
    /// every sink session's `search_path` is pinned to it alone, so the tables are created,
    /// found and written there whatever the role's own `search_path` says.
    pub sidecar_schema: Option<String>,
    /// Publication to stream (`SLUICE_PUBLICATION`).
    pub publication: String,
    /// Tables for the publication, when sluice creates it (`create_publication = true`).
    pub tables: Vec<String>,
    /// Create the publication if it does not exist. Off by default: publications are usually
    /// owned by the database's administrators.
    pub create_publication: bool,
    /// Replication slot name (`SLUICE_SLOT`).
    pub slot: String,
    pub rules: RulesSection,
    pub failure_policy: FailurePolicy,
    /// Column whose non-null value means "deleted", for every table that has it.
    pub soft_delete_column: Option<String>,
    /// Per-table overrides of `soft_delete_column` (empty string: no soft delete for that table).
    pub soft_delete_columns: BTreeMap<String, String>,
    pub batch: BatchSection,
    pub snapshot: SnapshotSection,
    pub reload: ReloadSection,
    /// Admin HTTP listener for /healthz, /readyz and /metrics (`SLUICE_ADMIN_ADDR`).
    pub admin_addr: Option<SocketAddr>,
    /// File holding the bearer token the admin actions require (`SLUICE_ADMIN_TOKEN_FILE`; the
    /// token itself may come from `SLUICE_ADMIN_TOKEN` instead). Required when `admin_addr` is
    /// not a loopback address.
    pub admin_token_file: Option<PathBuf>,
    /// Status update interval towards PostgreSQL, in milliseconds.
    pub status_interval_ms: u64,
    /// How often the INFO status line (stored LSN, lag, rates, rules version) is logged, in
    /// milliseconds.
    pub status_log_interval_ms: u64,
    pub reconnect: ReconnectSection,
}

/// How lost connections are retried (issue 18: the cap was an undocumented 30 s).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectSection {
    /// Longest wait between attempts, in milliseconds (`SLUICE_RECONNECT_MAX_BACKOFF_MS`,
    /// `--reconnect-max-backoff-ms`).
    pub max_backoff_ms: u64,
}

impl Default for ReconnectSection {
    fn default() -> Self {
        ReconnectSection {
            max_backoff_ms: 5_000,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSection {
    /// The rules component (`SLUICE_MODULE`).
    pub module: Option<PathBuf>,
    /// A file whose text is passed to the module's `init` (`SLUICE_RULES_CONFIG`).
    pub config_file: Option<PathBuf>,
    /// Inline rules configuration, used when `config_file` is unset.
    pub config: Option<String>,
    /// Changes per call into the module.
    pub batch_size: usize,
    /// Per-batch deadline for the module, in milliseconds.
    pub deadline_ms: u64,
    /// Memory cap for one module instance, in MiB.
    pub memory_mib: usize,
    /// Maximum buckets one change may be assigned to.
    pub max_buckets_per_change: usize,
    /// Largest module file sluice reads, in MiB (the CLI, the config, the file watch and
    /// `POST /rules/reload` alike).
    pub max_module_mib: u64,
    /// Directory of compiled modules (`SLUICE_RULES_CACHE_DIR`): unset means
    /// `$XDG_CACHE_HOME/sluice/modules` or `~/.cache/sluice/modules`, `"off"` disables it.
    pub cache_dir: Option<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchSection {
    /// Rows per sink transaction (a larger source transaction is written in chunks of this size
    /// inside one sink transaction).
    pub max_rows: usize,
    /// Approximate bytes of decoded changes held before writing.
    pub max_bytes: usize,
    /// Longest a committed source transaction waits before it is written, in milliseconds.
    pub max_delay_ms: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadSection {
    /// Reload when the module file changes on disk.
    pub watch: bool,
    /// Quiet time after the last write before a changed file is loaded, in milliseconds.
    pub debounce_ms: u64,
    /// Swap back to the previous version when a new one fails on too many of its first changes.
    pub rollback: bool,
    /// How many changes the new version is judged on.
    pub rollback_window: u64,
    /// Error rate over the window above which the new version is rolled back (0.0 to 1.0).
    pub rollback_error_rate: f64,
    /// When set, a candidate is first previewed over the current rows of the published tables,
    /// and refused when it fails on a larger share of them than this (0.0 to 1.0).
    pub preview_max_error_rate: Option<f64>,
}

impl Default for ReloadSection {
    fn default() -> Self {
        ReloadSection {
            watch: true,
            debounce_ms: 200,
            rollback: true,
            rollback_window: 100,
            rollback_error_rate: 0.5,
            preview_max_error_rate: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotSection {
    /// Also write snapshot rows to the changelog (as inserts). Edges are written either way.
    pub changelog: bool,
    /// Rows per keyset chunk.
    pub chunk_rows: usize,
    /// How often the publication is looked at for tables that joined or left it (a joined table
    /// that receives no writes sends no message that would say so).
    pub join_check_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: None,
            sink_url: None,
            sidecar_schema: None,
            publication: "sluice".to_owned(),
            tables: Vec::new(),
            create_publication: false,
            slot: "sluice".to_owned(),
            rules: RulesSection::default(),
            failure_policy: FailurePolicy::DeadLetter,
            soft_delete_column: Some("deleted_at".to_owned()),
            soft_delete_columns: BTreeMap::new(),
            batch: BatchSection::default(),
            snapshot: SnapshotSection::default(),
            reload: ReloadSection::default(),
            admin_addr: None,
            admin_token_file: None,
            status_interval_ms: 10_000,
            reconnect: ReconnectSection::default(),
            status_log_interval_ms: 60_000,
        }
    }
}

impl Default for RulesSection {
    fn default() -> Self {
        RulesSection {
            module: None,
            config_file: None,
            config: None,
            batch_size: 512,
            deadline_ms: 1_000,
            memory_mib: 64,
            max_buckets_per_change: 64,
            max_module_mib: 256,
            cache_dir: None,
        }
    }
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection {
            max_rows: 10_000,
            max_bytes: 16 << 20,
            max_delay_ms: 100,
        }
    }
}

impl Default for SnapshotSection {
    fn default() -> Self {
        SnapshotSection {
            changelog: true,
            chunk_rows: 10_000,
            join_check_ms: 10_000,
        }
    }
}

/// A configuration problem, reported before anything connects.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?} is invalid: {message}")]
    Env {
        name: &'static str,
        value: String,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file. Unknown keys are rejected with their name and line.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))
    }

    /// Applies `SLUICE_*` environment variables on top of the file.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("SLUICE_DATABASE_URL") {
            self.database_url = Some(v);
        }
        if let Some(v) = env("SLUICE_SINK_URL") {
            self.sink_url = Some(v);
        }
        if let Some(v) = env("SLUICE_SIDECAR_SCHEMA") {
            self.sidecar_schema = Some(v);
        }
        if let Some(v) = env("SLUICE_PUBLICATION") {
            self.publication = v;
        }
        if let Some(v) = env("SLUICE_SLOT") {
            self.slot = v;
        }
        if let Some(v) = env("SLUICE_MODULE") {
            self.rules.module = Some(PathBuf::from(v));
        }
        if let Some(v) = env("SLUICE_RULES_CONFIG") {
            self.rules.config_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("SLUICE_RULES_CACHE_DIR") {
            self.rules.cache_dir = Some(v);
        }
        if let Some(v) = env("SLUICE_FAILURE_POLICY") {
            self.failure_policy = match v.as_str() {
                "dead-letter" => FailurePolicy::DeadLetter,
                "halt" => FailurePolicy::Halt,
                _ => {
                    return Err(ConfigError::Env {
                        name: "SLUICE_FAILURE_POLICY",
                        value: v,
                        message: "expected dead-letter or halt".into(),
                    });
                }
            };
        }
        if let Some(v) = env("SLUICE_ADMIN_TOKEN_FILE") {
            self.admin_token_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("SLUICE_RECONNECT_MAX_BACKOFF_MS") {
            self.reconnect.max_backoff_ms = v.parse().map_err(|e| ConfigError::Env {
                name: "SLUICE_RECONNECT_MAX_BACKOFF_MS",
                value: v.clone(),
                message: format!("{e}: expected milliseconds"),
            })?;
        }
        if let Some(v) = env("SLUICE_ADMIN_ADDR") {
            self.admin_addr =
                Some(
                    v.parse()
                        .map_err(|e: std::net::AddrParseError| ConfigError::Env {
                            name: "SLUICE_ADMIN_ADDR",
                            value: v.clone(),
                            message: e.to_string(),
                        })?,
                );
        }
        Ok(())
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.database_url.is_none() {
            return bad(
                "no database URL: pass --database-url, set SLUICE_DATABASE_URL, or set database_url in the config file",
            );
        }
        if self.rules.module.is_none() {
            return bad(
                "no rules module: pass --module PATH (a component built for wasm32-wasip2), or set rules.module in the config file",
            );
        }
        if !valid_identifier(&self.slot) {
            return bad(
                "slot name must be 1-63 characters of lower-case letters, digits and underscores (PostgreSQL's rule for slot names)",
            );
        }
        if self.publication.is_empty() {
            return bad("publication name must not be empty");
        }
        if let Some(schema) = &self.sidecar_schema
            && (schema.is_empty() || schema.len() > 63)
        {
            return bad("sidecar_schema must be 1-63 bytes long (a PostgreSQL schema name)");
        }
        self.validate_ranges()?;
        if self.create_publication && self.tables.is_empty() {
            return bad("create_publication = true needs `tables` to list the tables to publish");
        }
        Ok(())
    }

    /// Checks every numeric setting against its range (the README's configuration table lists
    /// them). The first setting out of range is reported with its TOML key and the range.
    fn validate_ranges(&self) -> Result<(), ConfigError> {
        let r = &self.rules;
        in_range(
            "rules.batch_size",
            r.batch_size,
            RULES_BATCH_SIZE,
            BATCH_SIZE_NOTE,
        )?;
        in_range("rules.deadline_ms", r.deadline_ms, RULES_DEADLINE_MS, MS)?;
        in_range(
            "rules.memory_mib",
            r.memory_mib,
            RULES_MEMORY_MIB,
            MEMORY_NOTE,
        )?;
        in_range(
            "rules.max_buckets_per_change",
            r.max_buckets_per_change,
            RULES_MAX_BUCKETS_PER_CHANGE,
            "",
        )?;
        in_range(
            "rules.max_module_mib",
            r.max_module_mib,
            RULES_MAX_MODULE_MIB,
            " MiB",
        )?;
        let b = &self.batch;
        in_range("batch.max_rows", b.max_rows, BATCH_MAX_ROWS, " rows")?;
        in_range(
            "batch.max_bytes",
            b.max_bytes,
            BATCH_MAX_BYTES,
            " (1 MiB to 4 GiB)",
        )?;
        in_range("batch.max_delay_ms", b.max_delay_ms, BATCH_MAX_DELAY_MS, MS)?;
        in_range(
            "snapshot.chunk_rows",
            self.snapshot.chunk_rows,
            SNAPSHOT_CHUNK_ROWS,
            " rows",
        )?;
        in_range(
            "snapshot.join_check_ms",
            self.snapshot.join_check_ms,
            SNAPSHOT_JOIN_CHECK_MS,
            MS,
        )?;
        let reload = &self.reload;
        in_range(
            "reload.debounce_ms",
            reload.debounce_ms,
            RELOAD_DEBOUNCE_MS,
            MS,
        )?;
        in_range(
            "reload.rollback_window",
            reload.rollback_window,
            RELOAD_ROLLBACK_WINDOW,
            " changes",
        )?;
        share(
            "reload.rollback_error_rate",
            reload.rollback_error_rate,
            "the share of failed changes that rolls a new version back",
        )?;
        if let Some(rate) = reload.preview_max_error_rate {
            share(
                "reload.preview_max_error_rate",
                rate,
                "the share of current rows a candidate may fail on in its preview",
            )?;
        }
        in_range(
            "status_interval_ms",
            self.status_interval_ms,
            STATUS_INTERVAL_MS,
            " milliseconds; keep it well below the server's wal_sender_timeout",
        )?;
        in_range(
            "reconnect.max_backoff_ms",
            self.reconnect.max_backoff_ms,
            RECONNECT_MAX_BACKOFF_MS,
            MS,
        )?;
        in_range(
            "status_log_interval_ms",
            self.status_log_interval_ms,
            STATUS_LOG_INTERVAL_MS,
            " milliseconds",
        )?;
        Ok(())
    }

    /// The soft-delete column for a table (qualified name), if any.
    pub fn soft_delete_column_for(&self, table: &str) -> Option<&str> {
        match self.soft_delete_columns.get(table) {
            Some(col) if col.is_empty() => None,
            Some(col) => Some(col),
            None => self.soft_delete_column.as_deref(),
        }
    }

    /// The text passed to the rules module's init.
    pub fn rules_config_text(&self) -> Result<String, ConfigError> {
        match (&self.rules.config_file, &self.rules.config) {
            (Some(path), _) => std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            }),
            (None, Some(text)) => Ok(text.clone()),
            (None, None) => Ok(String::new()),
        }
    }

    pub fn max_delay(&self) -> Duration {
        Duration::from_millis(self.batch.max_delay_ms)
    }
}

// Allowed ranges of the numeric settings (inclusive). README.md's configuration table repeats them.

/// Changes per call into the module: the whole batch is copied into one instance's memory.
pub const RULES_BATCH_SIZE: (u64, u64) = (1, 65_536);
/// Per-batch deadline: up to ten minutes.
pub const RULES_DEADLINE_MS: (u64, u64) = (1, 600_000);
/// Linear memory per instance: a 32-bit Wasm memory holds at most 4 GiB.
pub const RULES_MEMORY_MIB: (u64, u64) = (1, 4_096);
pub const RULES_MAX_BUCKETS_PER_CHANGE: (u64, u64) = (1, 10_000);
pub const RULES_MAX_MODULE_MIB: (u64, u64) = (1, 4_096);
pub const BATCH_MAX_ROWS: (u64, u64) = (1, 1_000_000);
/// 1 MiB to 4 GiB of decoded changes.
pub const BATCH_MAX_BYTES: (u64, u64) = (1 << 20, 4 << 30);
/// 0 writes every commit at once; at most an hour.
pub const BATCH_MAX_DELAY_MS: (u64, u64) = (0, 3_600_000);
pub const SNAPSHOT_CHUNK_ROWS: (u64, u64) = (1, 1_000_000);
/// From 100 ms (one catalog query each time) to a day.
pub const SNAPSHOT_JOIN_CHECK_MS: (u64, u64) = (100, 86_400_000);
/// 0 loads a changed file at once; at most a minute.
pub const RELOAD_DEBOUNCE_MS: (u64, u64) = (0, 60_000);
pub const RELOAD_ROLLBACK_WINDOW: (u64, u64) = (1, 1_000_000);
/// From 100 ms to an hour; PostgreSQL's `wal_sender_timeout` (60 s by default) is the practical cap.
pub const STATUS_INTERVAL_MS: (u64, u64) = (100, 3_600_000);
/// From 100 ms to 10 minutes between reconnect attempts.
pub const RECONNECT_MAX_BACKOFF_MS: (u64, u64) = (100, 600_000);
/// Bounds of `status_log_interval_ms`.
pub const STATUS_LOG_INTERVAL_MS: (u64, u64) = (100, 86_400_000);

const MS: &str = " milliseconds";
const MEMORY_NOTE: &str = " MiB (a module's 32-bit memory holds at most 4 GiB)";
const BATCH_SIZE_NOTE: &str =
    " changes; a batch is copied into one module instance's memory, so a larger one cannot fit";

/// Refuses `value` outside `range` (inclusive), naming the key and the range; `note` follows the
/// range (a unit, or why the range is what it is).
fn in_range(
    key: &str,
    value: impl TryInto<u64> + Copy + std::fmt::Display,
    (min, max): (u64, u64),
    note: &str,
) -> Result<(), ConfigError> {
    match value.try_into() {
        Ok(v) if (min..=max).contains(&v) => Ok(()),
        _ => Err(ConfigError::Invalid(format!(
            "{key} = {value} is out of range: it must be between {min} and {max}{note}"
        ))),
    }
}

/// Refuses a share (`value`) outside 0.0 to 1.0, naming the key and saying what it is (`what`).
fn share(key: &str, value: f64, what: &str) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&value) {
        return Ok(());
    }
    let problem = if value.is_nan() {
        "is not a number"
    } else {
        "is out of range"
    };
    Err(ConfigError::Invalid(format!(
        "{key} = {} {problem}: it must be between 0.0 and 1.0 ({what})",
        toml_float(value)
    )))
}

/// A float as TOML writes it (`nan`, `inf`, `7.0`).
fn toml_float(v: f64) -> String {
    if v.is_nan() {
        "nan".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{v:?}")
    }
}

fn valid_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let err = Config::from_toml("slot = \"a\"\nslott = \"b\"\n").unwrap_err();
        assert!(err.contains("unknown field `slott`"), "{err}");
        let err = Config::from_toml("[batch]\nmax_rowz = 5\n").unwrap_err();
        assert!(err.contains("unknown field `max_rowz`"), "{err}");
    }

    #[test]
    fn env_overrides_file_and_bad_env_is_reported() {
        let mut c = Config::from_toml("slot = \"from_file\"\npublication = \"p\"\n").unwrap();
        c.apply_env(|k| (k == "SLUICE_SLOT").then(|| "from_env".to_string()))
            .unwrap();
        assert_eq!(c.slot, "from_env");
        assert_eq!(c.publication, "p");
        let err = c
            .apply_env(|k| (k == "SLUICE_FAILURE_POLICY").then(|| "explode".to_string()))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable SLUICE_FAILURE_POLICY=\"explode\" is invalid: expected dead-letter or halt"
        );
    }

    #[test]
    fn admin_token_file_comes_from_the_file_then_the_environment() {
        let mut c = Config::from_toml("admin_token_file = \"/etc/sluice/token\"\n").unwrap();
        assert_eq!(c.admin_token_file, Some(PathBuf::from("/etc/sluice/token")));
        c.apply_env(|k| (k == "SLUICE_ADMIN_TOKEN_FILE").then(|| "/run/secrets/t".to_string()))
            .unwrap();
        assert_eq!(c.admin_token_file, Some(PathBuf::from("/run/secrets/t")));
    }

    #[test]
    fn validation_says_what_to_do() {
        let c = Config::default();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("no database URL: pass --database-url")
        );
        let c = Config {
            database_url: Some("postgres://x".into()),
            slot: "Bad-Slot".into(),
            rules: RulesSection {
                module: Some("m.wasm".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .starts_with("slot name must be")
        );
    }

    /// Parses `toml` on top of a database URL and module, then validates.
    fn check(toml: &str) -> Result<(), String> {
        let mut c = Config::from_toml(toml).expect("parses");
        c.database_url = Some("postgres://x".into());
        c.rules.module = Some("m.wasm".into());
        c.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_in_range() {
        assert_eq!(check(""), Ok(()));
        // The README's example and the values the integration tests use.
        assert_eq!(
            check(
                "status_interval_ms = 200\n[rules]\ndeadline_ms = 300\nmemory_mib = 32\n\
                 [batch]\nmax_rows = 10000\nmax_delay_ms = 0\n[snapshot]\nchunk_rows = 1\n\
                 [reload]\ndebounce_ms = 0\nrollback_window = 20\nrollback_error_rate = 0.5\n"
            ),
            Ok(())
        );
    }

    #[test]
    fn every_bound_is_inclusive() {
        let at_bounds = [
            ("[rules]\nbatch_size", RULES_BATCH_SIZE),
            ("[rules]\ndeadline_ms", RULES_DEADLINE_MS),
            ("[rules]\nmemory_mib", RULES_MEMORY_MIB),
            (
                "[rules]\nmax_buckets_per_change",
                RULES_MAX_BUCKETS_PER_CHANGE,
            ),
            ("[rules]\nmax_module_mib", RULES_MAX_MODULE_MIB),
            ("[batch]\nmax_rows", BATCH_MAX_ROWS),
            ("[batch]\nmax_bytes", BATCH_MAX_BYTES),
            ("[batch]\nmax_delay_ms", BATCH_MAX_DELAY_MS),
            ("[snapshot]\nchunk_rows", SNAPSHOT_CHUNK_ROWS),
            ("[snapshot]\njoin_check_ms", SNAPSHOT_JOIN_CHECK_MS),
            ("[reload]\ndebounce_ms", RELOAD_DEBOUNCE_MS),
            ("[reload]\nrollback_window", RELOAD_ROLLBACK_WINDOW),
            ("status_interval_ms", STATUS_INTERVAL_MS),
            ("status_log_interval_ms", STATUS_LOG_INTERVAL_MS),
        ];
        for (key, (min, max)) in at_bounds {
            assert_eq!(check(&format!("{key} = {min}\n")), Ok(()), "{key} = {min}");
            assert_eq!(check(&format!("{key} = {max}\n")), Ok(()), "{key} = {max}");
            let err = check(&format!("{key} = {}\n", max + 1)).unwrap_err();
            let name = key.replace("[", "").replace("]\n", ".");
            assert!(
                err.starts_with(&format!(
                    "{name} = {} is out of range: it must be between {min} and {max}",
                    max + 1
                )),
                "{err}"
            );
            if min > 0 {
                let err = check(&format!("{key} = {}\n", min - 1)).unwrap_err();
                assert!(err.contains(" is out of range: "), "{err}");
            }
        }
        for rate in ["0.0", "1.0", "0", "1"] {
            assert_eq!(
                check(&format!("[reload]\nrollback_error_rate = {rate}\n")),
                Ok(())
            );
        }
    }

    #[test]
    fn settings_that_make_no_sense_are_refused_with_key_and_range() {
        let cases = [
            (
                "[rules]\nmax_buckets_per_change = 0\n",
                "rules.max_buckets_per_change = 0 is out of range: it must be between 1 and 10000",
            ),
            (
                "[reload]\nrollback_error_rate = nan\n",
                "reload.rollback_error_rate = nan is not a number: it must be between 0.0 and 1.0 \
                 (the share of failed changes that rolls a new version back)",
            ),
            (
                "[reload]\nrollback_error_rate = 7.0\n",
                "reload.rollback_error_rate = 7.0 is out of range: it must be between 0.0 and 1.0 \
                 (the share of failed changes that rolls a new version back)",
            ),
            (
                "[reload]\nrollback_error_rate = -inf\n",
                "reload.rollback_error_rate = -inf is out of range: it must be between 0.0 and 1.0 \
                 (the share of failed changes that rolls a new version back)",
            ),
            (
                "[reload]\npreview_max_error_rate = 1.5\n",
                "reload.preview_max_error_rate = 1.5 is out of range: it must be between 0.0 and \
                 1.0 (the share of current rows a candidate may fail on in its preview)",
            ),
            (
                "[reload]\npreview_max_error_rate = nan\n",
                "reload.preview_max_error_rate = nan is not a number: it must be between 0.0 and \
                 1.0 (the share of current rows a candidate may fail on in its preview)",
            ),
            (
                "status_interval_ms = 0\n",
                "status_interval_ms = 0 is out of range: it must be between 100 and 3600000 \
                 milliseconds; keep it well below the server's wal_sender_timeout",
            ),
            (
                "[batch]\nmax_delay_ms = 18446744073709551615\n",
                "batch.max_delay_ms = 18446744073709551615 is out of range: it must be between 0 \
                 and 3600000 milliseconds",
            ),
            (
                "[rules]\nmemory_mib = 0\n",
                "rules.memory_mib = 0 is out of range: it must be between 1 and 4096 MiB \
                 (a module's 32-bit memory holds at most 4 GiB)",
            ),
            (
                "[rules]\nbatch_size = 10_000_000\n",
                "rules.batch_size = 10000000 is out of range: it must be between 1 and 65536 \
                 changes; a batch is copied into one module instance's memory, so a larger one \
                 cannot fit",
            ),
            (
                "[rules]\nbatch_size = 0\n",
                "rules.batch_size = 0 is out of range: it must be between 1 and 65536 \
                 changes; a batch is copied into one module instance's memory, so a larger one \
                 cannot fit",
            ),
            (
                "[rules]\ndeadline_ms = 0\n",
                "rules.deadline_ms = 0 is out of range: it must be between 1 and 600000 milliseconds",
            ),
            (
                "[rules]\nmax_module_mib = 0\n",
                "rules.max_module_mib = 0 is out of range: it must be between 1 and 4096 MiB",
            ),
            (
                "[batch]\nmax_rows = 0\n",
                "batch.max_rows = 0 is out of range: it must be between 1 and 1000000 rows",
            ),
            (
                "[batch]\nmax_bytes = 1024\n",
                "batch.max_bytes = 1024 is out of range: it must be between 1048576 and 4294967296 \
                 (1 MiB to 4 GiB)",
            ),
            (
                "[snapshot]\nchunk_rows = 0\n",
                "snapshot.chunk_rows = 0 is out of range: it must be between 1 and 1000000 rows",
            ),
            (
                "[reload]\ndebounce_ms = 86400000\n",
                "reload.debounce_ms = 86400000 is out of range: it must be between 0 and 60000 \
                 milliseconds",
            ),
            (
                "[reload]\nrollback_window = 0\n",
                "reload.rollback_window = 0 is out of range: it must be between 1 and 1000000 \
                 changes",
            ),
        ];
        for (toml, expected) in cases {
            assert_eq!(check(toml), Err(expected.to_owned()), "{toml}");
        }
    }

    #[test]
    fn the_first_violation_is_reported() {
        assert_eq!(
            check("status_interval_ms = 0\n[rules]\nmemory_mib = 0\n").unwrap_err(),
            "rules.memory_mib = 0 is out of range: it must be between 1 and 4096 MiB \
             (a module's 32-bit memory holds at most 4 GiB)"
        );
    }

    #[test]
    fn soft_delete_defaults_and_overrides() {
        let c = Config::from_toml(
            "[soft_delete_columns]\nnotes = \"\"\n\"billing.invoices\" = \"removed_at\"\n",
        )
        .unwrap();
        assert_eq!(c.soft_delete_column_for("items"), Some("deleted_at"));
        assert_eq!(c.soft_delete_column_for("notes"), None);
        assert_eq!(
            c.soft_delete_column_for("billing.invoices"),
            Some("removed_at")
        );
    }
}
