//! The sidecar tables: created when missing, adopted as they are when they exist.
//!
//! The first four are synchro's server schema (trainstar/synchro, `migrate.Migrations()`), column
//! for column and index for index, so an existing synchro pull/rebuild server can read what sluice
//! writes. The `sluice_*` tables are sluice's own bookkeeping.
//!
//! [`ensure`] runs on every start, in one transaction serialised by an advisory lock. It reads the
//! catalog first and issues DDL only for what is missing, so a start on a database that is
//! already in shape runs no DDL at all: it then works for a role that owns none of the tables,
//! and takes no lock beyond `ACCESS SHARE` on them. What it may change on an existing table:
//! - add sluice's extra columns, always nullable (`ADD COLUMN IF NOT EXISTS`); synchro's columns
//!   are never renamed, retyped or re-constrained;
//! - create an index under synchro's name, unless an index with the same definition exists under
//!   any name;
//! - rename an index with sluice's old name (before synchro's names were adopted) to synchro's,
//!   or drop it when synchro's migration has since created the same index under synchro's name.
//!
//! Tables are looked up through the `search_path`, as every later statement finds them, so
//! tables that synchro created in `public` are adopted even when sluice's own schema comes first
//! in the path (nothing is created there to shadow them). With `sidecar_schema` set, the sink
//! sessions' path is that one schema ([`super::search_path`]).

use tokio_postgres::Client;

/// One sidecar table.
#[derive(Debug)]
pub struct TableSpec {
    pub name: &'static str,
    /// The `CREATE TABLE` statement (without `IF NOT EXISTS`) for a database that lacks it.
    pub create: &'static str,
    /// Columns sluice reads or writes that any version of the table must have.
    pub required: &'static [&'static str],
    /// Columns sluice adds to an existing table that lacks them, as `(name, type)`. Nullable, no
    /// default: adding them rewrites nothing.
    pub extra: &'static [(&'static str, &'static str)],
    pub indexes: &'static [IndexSpec],
}

/// A secondary index sluice needs, under synchro's name.
#[derive(Debug)]
pub struct IndexSpec {
    pub name: &'static str,
    /// Key columns, in order; a plain btree with default operator classes and collations.
    pub columns: &'static [&'static str],
    /// The name sluice used for the same index before it adopted synchro's names.
    pub legacy_name: &'static str,
}

/// Every sidecar table, in creation order.
pub const TABLES: &[TableSpec] = &[
    TableSpec {
        name: "sync_changelog",
        create: "CREATE TABLE sync_changelog (
    seq        BIGSERIAL PRIMARY KEY,
    bucket_id  TEXT NOT NULL,
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    operation  SMALLINT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)",
        required: &["seq", "bucket_id", "table_name", "record_id", "operation"],
        extra: &[],
        indexes: &[
            IndexSpec {
                name: "idx_sync_changelog_bucket_seq",
                columns: &["bucket_id", "seq"],
                legacy_name: "sync_changelog_bucket_seq",
            },
            IndexSpec {
                name: "idx_sync_changelog_record",
                columns: &["table_name", "record_id"],
                legacy_name: "sync_changelog_table_record",
            },
        ],
    },
    TableSpec {
        name: "sync_bucket_edges",
        create: "CREATE TABLE sync_bucket_edges (
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    bucket_id  TEXT NOT NULL,
    checksum   INTEGER,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, record_id, bucket_id)
)",
        required: &[
            "table_name",
            "record_id",
            "bucket_id",
            "checksum",
            "updated_at",
        ],
        extra: &[],
        indexes: &[IndexSpec {
            name: "idx_sync_bucket_edges_bucket",
            columns: &["bucket_id", "table_name", "record_id"],
            legacy_name: "sync_bucket_edges_bucket",
        }],
    },
    TableSpec {
        name: "sync_rule_failures",
        // `record_id NOT NULL` as synchro has it: a failure whose key is unknown is stored with
        // `UNKNOWN_RECORD_ID` (sink::writer).
        create: "CREATE TABLE sync_rule_failures (
    id            BIGSERIAL PRIMARY KEY,
    table_name    TEXT NOT NULL,
    record_id     TEXT NOT NULL,
    operation     SMALLINT NOT NULL,
    error_text    TEXT NOT NULL,
    payload       JSONB,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    lsn           BIGINT,
    rules_version TEXT,
    resolved_at   TIMESTAMPTZ
)",
        required: &[
            "table_name",
            "record_id",
            "operation",
            "error_text",
            "payload",
        ],
        extra: &[
            ("lsn", "BIGINT"),
            ("rules_version", "TEXT"),
            ("resolved_at", "TIMESTAMPTZ"),
        ],
        indexes: &[],
    },
    TableSpec {
        name: "sync_wal_position",
        create: "CREATE TABLE sync_wal_position (
    slot_name     TEXT PRIMARY KEY,
    confirmed_lsn BIGINT NOT NULL DEFAULT 0,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
)",
        required: &["slot_name", "confirmed_lsn", "updated_at"],
        extra: &[],
        indexes: &[],
    },
    TableSpec {
        name: "sluice_snapshot_progress",
        create: "CREATE TABLE sluice_snapshot_progress (
    slot_name   TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    last_key    TEXT[],
    rows_done   BIGINT NOT NULL DEFAULT 0,
    done        BOOLEAN NOT NULL DEFAULT false,
    consistent_lsn BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at  TIMESTAMPTZ,
    PRIMARY KEY (slot_name, table_name)
)",
        required: &[
            "slot_name",
            "table_name",
            "last_key",
            "rows_done",
            "done",
            "consistent_lsn",
            "updated_at",
        ],
        extra: &[("started_at", "TIMESTAMPTZ")],
        indexes: &[],
    },
    TableSpec {
        name: "sluice_rebucket_progress",
        create: "CREATE TABLE sluice_rebucket_progress (
    slot_name   TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    last_key    TEXT[],
    rows_done   BIGINT NOT NULL DEFAULT 0,
    done        BOOLEAN NOT NULL DEFAULT false,
    consistent_lsn BIGINT NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at  TIMESTAMPTZ,
    PRIMARY KEY (slot_name, table_name)
)",
        required: &[
            "slot_name",
            "table_name",
            "last_key",
            "rows_done",
            "done",
            "consistent_lsn",
            "updated_at",
        ],
        extra: &[("started_at", "TIMESTAMPTZ")],
        indexes: &[],
    },
    TableSpec {
        name: "sluice_rule_versions",
        create: "CREATE TABLE sluice_rule_versions (
    slot_name    TEXT NOT NULL,
    version      TEXT NOT NULL,
    first_lsn    BIGINT NOT NULL,
    module_path  TEXT,
    activated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, first_lsn, version)
)",
        required: &[
            "slot_name",
            "version",
            "first_lsn",
            "module_path",
            "activated_at",
        ],
        extra: &[],
        indexes: &[],
    },
    TableSpec {
        name: "sluice_row_state",
        create: "CREATE TABLE sluice_row_state (
    table_name  TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    own_buckets TEXT[],
    checksum    INTEGER,
    PRIMARY KEY (table_name, record_id)
)",
        required: &["table_name", "record_id", "own_buckets", "checksum"],
        extra: &[],
        indexes: &[],
    },
    TableSpec {
        name: "sluice_row_links",
        create: "CREATE TABLE sluice_row_links (
    relation  TEXT NOT NULL,
    child_id  TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    PRIMARY KEY (relation, child_id)
)",
        required: &["relation", "child_id", "parent_id"],
        extra: &[],
        indexes: &[IndexSpec {
            name: "sluice_row_links_parent",
            columns: &["relation", "parent_id"],
            legacy_name: "",
        }],
    },
    TableSpec {
        name: "sluice_relations",
        // The table_name each source relation's edges are stored under (sink::relations).
        create: "CREATE TABLE sluice_relations (
    slot_name    TEXT NOT NULL,
    relation_oid BIGINT NOT NULL,
    table_name   TEXT NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, relation_oid)
)",
        required: &["slot_name", "relation_oid", "table_name", "updated_at"],
        extra: &[],
        indexes: &[],
    },
    TableSpec {
        name: "sluice_walk_seen",
        // The record ids a keyset walk read, so that its end can tell which stored memberships
        // belong to rows that no longer exist (see `sink::vanished`). Logged: a walk resumed
        // after a crash must find every id its persisted chunks read.
        create: "CREATE TABLE sluice_walk_seen (
    slot_name  TEXT NOT NULL,
    walk       TEXT NOT NULL,
    table_name TEXT NOT NULL,
    record_id  TEXT NOT NULL,
    PRIMARY KEY (slot_name, walk, table_name, record_id)
)",
        required: &["slot_name", "walk", "table_name", "record_id"],
        extra: &[],
        indexes: &[],
    },
    TableSpec {
        name: "sluice_leader",
        // Which process may commit for a slot, and since when (sink::lease).
        create: crate::sink::lease::CREATE,
        required: &[
            "slot_name",
            "epoch",
            "holder",
            "lease_ms",
            "renewed_at",
            "holder_locked",
            "sink_pid",
            "sink_started",
        ],
        extra: &[],
        indexes: &[],
    },
];

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
    "sluice_row_state",
    "sluice_row_links",
    "sluice_relations",
    "sluice_walk_seen",
    "sluice_leader",
];

/// The DDL of every sidecar table and index as a fresh database gets it (`IF NOT EXISTS`
/// throughout). For tools and benchmarks that set up an empty database by hand; sluice itself
/// goes through [`ensure`], which also adopts existing tables.
pub fn sidecar_ddl() -> String {
    let mut sql = String::new();
    for table in TABLES {
        let create = table
            .create
            .replacen("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", 1);
        sql.push_str(&create);
        sql.push_str(";\n");
        for index in table.indexes {
            sql.push_str(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} ({});\n",
                index.name,
                table.name,
                index.columns.join(", ")
            ));
        }
    }
    sql
}

/// Why the sidecar tables could not be created or adopted. Each variant names the table.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("sidecar tables: {what}: {source}")]
    Transaction {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("sidecar table {table}: {what}: {source}")]
    Sql {
        table: String,
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(
        "sidecar table {table} exists but is a {kind}, not a table: rename or drop it, or put sluice's tables in another schema (--sidecar-schema)"
    )]
    NotATable { table: String, kind: String },
    #[error(
        "cannot create sidecar table {table}: no schema in the sink session's search_path ({search_path}) exists for role {role:?}. Create one it owns, as a superuser or the database owner: `CREATE SCHEMA sluice AUTHORIZATION {role_ident};`, and start sluice with --sidecar-schema sluice (or sidecar_schema in the config file)"
    )]
    NoSchema {
        table: String,
        search_path: String,
        role: String,
        role_ident: String,
    },
    #[error(
        "cannot create sidecar table {table} in schema {schema}: role {role:?} lacks the CREATE privilege on it. As the schema's owner run `GRANT CREATE ON SCHEMA {schema} TO {role_ident};`, or give sluice a schema of its own: `CREATE SCHEMA sluice AUTHORIZATION {role_ident};` and start sluice with --sidecar-schema sluice"
    )]
    NoCreate {
        table: String,
        schema: String,
        role: String,
        role_ident: String,
    },
    #[error(
        "sidecar table {table} exists but lacks the column(s) {columns} that sluice writes; it was not created by synchro or sluice. Rename it, or add the columns, then restart sluice"
    )]
    MissingColumns { table: String, columns: String },
    #[error(
        "sidecar table {table} exists and belongs to role {owner:?}; sluice runs as {role:?}, which does not own it, so it cannot make the changes it needs. Run this as {owner:?} (or a superuser), then restart sluice: `{statements}` (or make {role:?} the owner: `ALTER TABLE {table} OWNER TO {role_ident};`)"
    )]
    NotOwner {
        table: String,
        owner: String,
        role: String,
        role_ident: String,
        statements: String,
    },
}

impl SchemaError {
    /// The database error behind this one, if there is one.
    pub fn source_error(&self) -> Option<&tokio_postgres::Error> {
        match self {
            SchemaError::Sql { source, .. } | SchemaError::Transaction { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

/// What one start did to the schema, for the log and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SchemaChanges {
    /// Every DDL statement run, in order.
    pub statements: Vec<String>,
    /// The tables created (rather than adopted), in creation order.
    pub created: Vec<&'static str>,
}

impl SchemaChanges {
    /// Both tables the snapshot fills were created by this check (see
    /// `sink::deferred_indexes`).
    pub fn created_sidecar(&self) -> bool {
        ["sync_changelog", "sync_bucket_edges"]
            .iter()
            .all(|t| self.created.contains(t))
    }
}

/// Creates the sidecar tables that are missing and adopts those that exist (see the module
/// docs). One transaction; two processes starting at once are serialised by an advisory lock.
pub async fn ensure(client: &Client) -> Result<SchemaChanges, SchemaError> {
    let whole = |what: &'static str| {
        move |source: tokio_postgres::Error| SchemaError::Transaction { what, source }
    };
    client
        .batch_execute("BEGIN; SELECT pg_advisory_xact_lock(hashtext('sluice sidecar schema'))")
        .await
        .map_err(whole("starting the schema transaction"))?;
    let mut changes = SchemaChanges::default();
    for table in TABLES {
        if let Err(e) = ensure_table(client, table, &mut changes).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    }
    client
        .batch_execute("COMMIT")
        .await
        .map_err(whole("committing the schema changes"))?;
    for statement in &changes.statements {
        tracing::info!(%statement, "sidecar schema changed");
    }
    Ok(changes)
}

/// Where the sidecar tables are, as (schema, table) in the sink database: found through the
/// `search_path`, as every statement sluice runs finds them. When the sink is the source
/// database, a `FOR ALL TABLES` or `FOR TABLES IN SCHEMA` publication sends their changes back;
/// the pipeline ignores exactly these tables, in whatever schema they are.
pub async fn locations(client: &Client) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let names: Vec<&str> = SIDECAR_TABLES.to_vec();
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM unnest($1::text[]) AS t(name) \
             JOIN pg_class c ON c.oid = to_regclass(quote_ident(t.name)) \
             JOIN pg_namespace n ON n.oid = c.relnamespace",
            &[&names],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Checks, before a `CREATE TABLE`, that the session has a schema to create `table` in and may
/// create there, so that a missing privilege is reported with the statement that grants it
/// rather than as a bare `permission denied for schema`.
async fn creation_target(client: &Client, table: &str) -> Result<(), SchemaError> {
    let row = client
        .query_one(
            "SELECT quote_ident(current_schema()), has_schema_privilege(current_schema(), 'CREATE'), \
                    current_setting('search_path'), current_user::text, quote_ident(current_user)",
            &[],
        )
        .await
        .map_err(|source| SchemaError::Sql {
            table: table.to_owned(),
            what: "finding the schema to create it in".to_owned(),
            source,
        })?;
    let role: String = row.get(3);
    let role_ident: String = row.get(4);
    match (
        row.get::<_, Option<String>>(0),
        row.get::<_, Option<bool>>(1),
    ) {
        (Some(_), Some(true)) => Ok(()),
        (Some(schema), _) => Err(SchemaError::NoCreate {
            table: table.to_owned(),
            schema,
            role,
            role_ident,
        }),
        (None, _) => Err(SchemaError::NoSchema {
            table: table.to_owned(),
            search_path: row.get(2),
            role,
            role_ident,
        }),
    }
}

/// The catalog's view of an existing table.
struct Existing {
    oid: u32,
    /// `schema.table`, quoted where needed, as `pg_get_indexdef` prints it.
    qualified: String,
    /// The schema, quoted where needed.
    schema_ident: String,
    owner: String,
    is_owner: bool,
    role: String,
    role_ident: String,
    columns: Vec<String>,
}

async fn ensure_table(
    client: &Client,
    table: &TableSpec,
    changes: &mut SchemaChanges,
) -> Result<(), SchemaError> {
    let sql = |what: &str| {
        let what = what.to_owned();
        let name = table.name.to_owned();
        move |source: tokio_postgres::Error| SchemaError::Sql {
            table: name,
            what,
            source,
        }
    };
    let existing = match lookup(client, table).await? {
        Some(existing) => existing,
        None => {
            creation_target(client, table.name).await?;
            client
                .batch_execute(table.create)
                .await
                .map_err(sql("creating the table"))?;
            changes.created.push(table.name);
            changes.statements.push(
                table
                    .create
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            lookup(client, table)
                .await?
                .expect("a table just created is visible")
        }
    };

    let missing: Vec<&str> = table
        .required
        .iter()
        .copied()
        .filter(|c| !existing.columns.iter().any(|have| have == c))
        .collect();
    if !missing.is_empty() {
        return Err(SchemaError::MissingColumns {
            table: existing.qualified.clone(),
            columns: missing.join(", "),
        });
    }

    let mut plan = Vec::new();
    let additions: Vec<String> = table
        .extra
        .iter()
        .filter(|(c, _)| !existing.columns.iter().any(|have| have == c))
        .map(|(c, ty)| format!("ADD COLUMN IF NOT EXISTS {c} {ty}"))
        .collect();
    if !additions.is_empty() {
        plan.push(format!(
            "ALTER TABLE {} {}",
            existing.qualified,
            additions.join(", ")
        ));
    }
    if !table.indexes.is_empty() {
        let indexes = read_indexes(client, existing.oid)
            .await
            .map_err(sql("reading its indexes"))?;
        plan.extend(index_plan(table, &existing, &indexes));
    }
    if plan.is_empty() {
        return Ok(());
    }
    if !existing.is_owner {
        return Err(SchemaError::NotOwner {
            table: existing.qualified,
            owner: existing.owner,
            role: existing.role,
            role_ident: existing.role_ident,
            statements: plan.join("; ") + ";",
        });
    }
    for statement in plan {
        client
            .batch_execute(&statement)
            .await
            .map_err(sql(&format!("running `{statement}`")))?;
        changes.statements.push(statement);
    }
    Ok(())
}

async fn lookup(client: &Client, table: &TableSpec) -> Result<Option<Existing>, SchemaError> {
    let sql = |what: &'static str| {
        let name = table.name.to_owned();
        move |source: tokio_postgres::Error| SchemaError::Sql {
            table: name,
            what: what.to_owned(),
            source,
        }
    };
    let row = client
        .query_opt(
            "SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                    quote_ident(n.nspname), c.relkind::text, \
                    pg_get_userbyid(c.relowner)::text, pg_has_role(c.relowner, 'USAGE'), \
                    current_user::text, quote_ident(current_user), \
                    ARRAY(SELECT a.attname::text FROM pg_attribute a \
                          WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                          ORDER BY a.attnum) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1::text)",
            &[&table.name],
        )
        .await
        .map_err(sql("looking it up in the catalog"))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let qualified: String = row.get(1);
    let kind: String = row.get(3);
    if kind != "r" && kind != "p" {
        return Err(SchemaError::NotATable {
            table: qualified,
            kind: match kind.as_str() {
                "v" => "view",
                "m" => "materialized view",
                "f" => "foreign table",
                "S" => "sequence",
                "i" | "I" => "index",
                _ => "relation of another kind",
            }
            .into(),
        });
    }
    Ok(Some(Existing {
        oid: row.get(0),
        qualified,
        schema_ident: row.get(2),
        owner: row.get(4),
        is_owner: row.get(5),
        role: row.get(6),
        role_ident: row.get(7),
        columns: row.get(8),
    }))
}

/// An index of an existing table, as the catalog defines it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexDef {
    pub name: String,
    /// `pg_get_indexdef` without `CREATE [UNIQUE] INDEX <name>`: what the index is, whatever it
    /// is called (`UNIQUE ON public.t USING btree (a, b) WHERE ...`). Default operator classes,
    /// collations and orderings are left out by PostgreSQL, so two indexes that behave the same
    /// print the same.
    pub definition: String,
}

async fn read_indexes(client: &Client, table: u32) -> Result<Vec<IndexDef>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT name, CASE WHEN left(def, length(prefix)) = prefix \
                          THEN CASE WHEN uniq THEN 'UNIQUE ' ELSE '' END || substr(def, length(prefix) + 1) \
                          ELSE def END \
             FROM (SELECT ic.relname::text AS name, i.indisunique AS uniq, \
                          pg_get_indexdef(i.indexrelid) AS def, \
                          'CREATE ' || CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END \
                            || 'INDEX ' || quote_ident(ic.relname) || ' ' AS prefix \
                   FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
                   WHERE i.indrelid = $1) d \
             ORDER BY name",
            &[&table],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| IndexDef {
            name: r.get(0),
            definition: r.get(1),
        })
        .collect())
}

/// The definition, as [`IndexDef::definition`] prints it, of the index sluice wants.
fn wanted_definition(qualified_table: &str, index: &IndexSpec) -> String {
    format!(
        "ON {qualified_table} USING btree ({})",
        index.columns.join(", ")
    )
}

/// The statements that give `table` its indexes, given the ones it has.
fn index_plan(table: &TableSpec, existing: &Existing, have: &[IndexDef]) -> Vec<String> {
    let mut plan = Vec::new();
    for index in table.indexes {
        let wanted = wanted_definition(&existing.qualified, index);
        let named = have.iter().find(|i| i.name == index.name);
        let legacy = have
            .iter()
            .find(|i| i.name == index.legacy_name && i.definition == wanted);
        let same = have.iter().find(|i| i.definition == wanted);
        let legacy_ident = |name: &str| format!("{}.{}", existing.schema_ident, name);
        match (named, legacy, same) {
            // synchro's name is taken. If sluice's old index duplicates it (synchro's migration
            // ran after an older sluice), drop sluice's copy. An index under synchro's name with
            // another definition is the operator's: left alone.
            (Some(named), Some(legacy), _) if named.definition == wanted => {
                plan.push(format!("DROP INDEX {}", legacy_ident(&legacy.name)));
            }
            (Some(_), _, _) => {}
            // sluice's old name: give it synchro's.
            (None, Some(legacy), _) => plan.push(format!(
                "ALTER INDEX {} RENAME TO {}",
                legacy_ident(&legacy.name),
                index.name
            )),
            // The same index under a name of the operator's choosing: no second copy.
            (None, None, Some(_)) => {}
            (None, None, None) => plan.push(format!(
                "CREATE INDEX {} ON {} ({})",
                index.name,
                existing.qualified,
                index.columns.join(", ")
            )),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn existing() -> Existing {
        Existing {
            oid: 1,
            qualified: "public.sync_changelog".into(),
            schema_ident: "public".into(),
            owner: "sluice".into(),
            is_owner: true,
            role: "sluice".into(),
            role_ident: "sluice".into(),
            columns: Vec::new(),
        }
    }

    fn def(name: &str, definition: &str) -> IndexDef {
        IndexDef {
            name: name.into(),
            definition: definition.into(),
        }
    }

    const PKEY: &str = "UNIQUE ON public.sync_changelog USING btree (seq)";
    const BUCKET_SEQ: &str = "ON public.sync_changelog USING btree (bucket_id, seq)";
    const RECORD: &str = "ON public.sync_changelog USING btree (table_name, record_id)";

    fn changelog_plan(have: &[IndexDef]) -> Vec<String> {
        index_plan(&TABLES[0], &existing(), have)
    }

    #[test]
    fn a_fresh_table_gets_synchros_index_names() {
        assert_eq!(
            changelog_plan(&[def("sync_changelog_pkey", PKEY)]),
            vec![
                "CREATE INDEX idx_sync_changelog_bucket_seq ON public.sync_changelog (bucket_id, seq)",
                "CREATE INDEX idx_sync_changelog_record ON public.sync_changelog (table_name, record_id)",
            ]
        );
    }

    #[test]
    fn synchros_indexes_are_kept_as_they_are() {
        let have = [
            def("idx_sync_changelog_bucket_seq", BUCKET_SEQ),
            def("idx_sync_changelog_record", RECORD),
            def("sync_changelog_pkey", PKEY),
        ];
        assert!(changelog_plan(&have).is_empty());
    }

    #[test]
    fn sluices_old_names_are_renamed() {
        let have = [
            def("sync_changelog_bucket_seq", BUCKET_SEQ),
            def("sync_changelog_pkey", PKEY),
            def("sync_changelog_table_record", RECORD),
        ];
        assert_eq!(
            changelog_plan(&have),
            vec![
                "ALTER INDEX public.sync_changelog_bucket_seq RENAME TO idx_sync_changelog_bucket_seq",
                "ALTER INDEX public.sync_changelog_table_record RENAME TO idx_sync_changelog_record",
            ]
        );
    }

    #[test]
    fn sluices_old_duplicates_of_synchros_indexes_are_dropped() {
        let have = [
            def("idx_sync_changelog_bucket_seq", BUCKET_SEQ),
            def("idx_sync_changelog_record", RECORD),
            def("sync_changelog_bucket_seq", BUCKET_SEQ),
            def("sync_changelog_pkey", PKEY),
            def("sync_changelog_table_record", RECORD),
        ];
        assert_eq!(
            changelog_plan(&have),
            vec![
                "DROP INDEX public.sync_changelog_bucket_seq",
                "DROP INDEX public.sync_changelog_table_record",
            ]
        );
    }

    #[test]
    fn the_same_definition_under_another_name_gets_no_second_copy() {
        let have = [
            def("by_bucket", BUCKET_SEQ),
            def("sync_changelog_pkey", PKEY),
            // Same columns but not the same index: a partial one does not count.
            def(
                "partial_record",
                "ON public.sync_changelog USING btree (table_name, record_id) WHERE (operation = 3)",
            ),
        ];
        assert_eq!(
            changelog_plan(&have),
            vec![
                "CREATE INDEX idx_sync_changelog_record ON public.sync_changelog (table_name, record_id)"
            ]
        );
    }

    #[test]
    fn an_old_name_with_another_definition_is_not_renamed() {
        let have = [
            def(
                "sync_changelog_bucket_seq",
                "ON public.sync_changelog USING btree (bucket_id)",
            ),
            def("idx_sync_changelog_record", RECORD),
        ];
        assert_eq!(
            changelog_plan(&have),
            vec![
                "CREATE INDEX idx_sync_changelog_bucket_seq ON public.sync_changelog (bucket_id, seq)"
            ]
        );
    }

    #[test]
    fn fresh_ddl_uses_synchros_index_names_only() {
        let ddl = sidecar_ddl();
        for name in [
            "idx_sync_changelog_bucket_seq",
            "idx_sync_changelog_record",
            "idx_sync_bucket_edges_bucket",
        ] {
            assert!(ddl.contains(&format!("CREATE INDEX IF NOT EXISTS {name} ON")));
        }
        for table in TABLES {
            assert!(ddl.contains(&format!("CREATE TABLE IF NOT EXISTS {} (", table.name)));
            for index in table.indexes {
                assert!(!ddl.contains(&format!(" {} ON", index.legacy_name)));
            }
        }
        assert_eq!(
            TABLES.iter().map(|t| t.name).collect::<Vec<_>>(),
            SIDECAR_TABLES
        );
    }
}
