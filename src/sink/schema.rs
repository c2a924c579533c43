//! The sidecar tables, created idempotently at start.
//!
//! The first four are synchro's server schema, column for column, so an existing synchro
//! pull/rebuild server can read what sluice writes. The `sluice_*` tables are sluice's own
//! bookkeeping.

/// DDL for every sidecar table and index. Safe to run on every start: `IF NOT EXISTS` throughout,
/// and never altered once created.
pub const SIDECAR_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS sync_changelog (
    seq        BIGSERIAL PRIMARY KEY,
    bucket_id  TEXT NOT NULL,
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    operation  SMALLINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS sync_changelog_bucket_seq ON sync_changelog (bucket_id, seq);
CREATE INDEX IF NOT EXISTS sync_changelog_table_record ON sync_changelog (table_name, record_id);

CREATE TABLE IF NOT EXISTS sync_bucket_edges (
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    bucket_id  TEXT NOT NULL,
    checksum   INTEGER,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, record_id, bucket_id)
);
CREATE INDEX IF NOT EXISTS sync_bucket_edges_bucket ON sync_bucket_edges (bucket_id, table_name, record_id);

CREATE TABLE IF NOT EXISTS sync_rule_failures (
    id         BIGSERIAL PRIMARY KEY,
    table_name TEXT NOT NULL,
    record_id  TEXT,
    operation  SMALLINT NOT NULL,
    error_text TEXT NOT NULL,
    payload    JSONB,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    lsn        BIGINT,
    rules_version TEXT
);

CREATE TABLE IF NOT EXISTS sync_wal_position (
    slot_name     TEXT PRIMARY KEY,
    confirmed_lsn BIGINT NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS sluice_snapshot_progress (
    slot_name   TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    last_key    TEXT[],
    rows_done   BIGINT NOT NULL DEFAULT 0,
    done        BOOLEAN NOT NULL DEFAULT false,
    consistent_lsn BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, table_name)
);

CREATE TABLE IF NOT EXISTS sluice_rebucket_progress (
    slot_name   TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    last_key    TEXT[],
    rows_done   BIGINT NOT NULL DEFAULT 0,
    done        BOOLEAN NOT NULL DEFAULT false,
    consistent_lsn BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, table_name)
);

CREATE TABLE IF NOT EXISTS sluice_rule_versions (
    slot_name    TEXT NOT NULL,
    version      TEXT NOT NULL,
    first_lsn    BIGINT NOT NULL,
    module_path  TEXT,
    activated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, first_lsn, version)
);
"#;

/// Names of the tables sluice writes. Changes to them are never fed back into the rules, even
/// when a publication is `FOR ALL TABLES`.
pub const SIDECAR_TABLES: &[&str] = &[
    "sync_changelog",
    "sync_bucket_edges",
    "sync_rule_failures",
    "sync_wal_position",
    "sluice_snapshot_progress",
    "sluice_rebucket_progress",
    "sluice_rule_versions",
];
