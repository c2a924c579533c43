//! What the source database says about the published tables: names, columns, types and keys.
//!
//! Read over an ordinary SQL connection at start, to refuse unusable tables before streaming,
//! and by the snapshot, which has no Relation messages to learn the shape from.

use std::sync::Arc;

use tokio_postgres::Client;
use tracing::warn;

use crate::model::{Column, KeyGap, ReplicaIdentity, TableSchema};
use crate::source::values::presented_type;

/// A published table as the catalog describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishedTable {
    /// Its shape as the stream carries it: only the columns the publication streams (a column
    /// list, and generated columns, leave some out), so that the snapshot shows the rules what
    /// the stream does. `schema.primary_key` is the primary key in key order.
    pub schema: Arc<TableSchema>,
    /// The publication's row filter for the table (PostgreSQL 15+), as SQL over its columns:
    /// the snapshot reads only the rows it publishes.
    pub row_filter: Option<String>,
    /// Columns the stream does not carry, in column order (a column list leaves them out, or
    /// they are generated and not streamed).
    pub unstreamed: Vec<String>,
    /// The SQL names of the primary key columns' types with their modifiers, in key order
    /// (`format_type`, qualified where not visible): a resumed snapshot casts its last key to
    /// them, because an untyped literal cannot take a composite (row) type. The modifier
    /// matters: `CAST('101' AS bit)` is `bit(1)` and truncates.
    pub key_types: Vec<String>,
}

/// Why the catalog cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "publication {publication:?} does not exist in database {database:?}: create it with `CREATE PUBLICATION {publication} FOR TABLE ...;`, or set create_publication = true and tables = [...] in the config"
    )]
    MissingPublication {
        publication: String,
        database: String,
    },
    #[error(
        "publication {0:?} has no tables: add some with `ALTER PUBLICATION {0} ADD TABLE ...;`"
    )]
    EmptyPublication(String),
    #[error(
        "table {table} has no primary key{ri}: sluice identifies rows by their key. Add one with `ALTER TABLE {sql} ADD PRIMARY KEY (...)`, or remove the table from the publication"
    )]
    NoPrimaryKey {
        table: String,
        sql: String,
        ri: &'static str,
    },
    #[error(
        "table {table} has REPLICA IDENTITY NOTHING, so PostgreSQL does not send which row an update or delete touched: run `ALTER TABLE {sql} REPLICA IDENTITY DEFAULT;`"
    )]
    ReplicaIdentityNothing { table: String, sql: String },
    #[error(
        "table {table} has REPLICA IDENTITY USING INDEX {index}, which leaves out primary key column{plural} {columns}: its deletes would not say which row they removed. Run `ALTER TABLE {sql} REPLICA IDENTITY DEFAULT;` (or FULL)"
    )]
    IdentityLacksKey {
        table: String,
        sql: String,
        index: String,
        plural: &'static str,
        columns: String,
    },
    #[error(
        "publication {publication:?} does not publish primary key column{plural} {columns} of table {table}, so its changes cannot be tied to a row: publish the table with a column list that includes the key, or with none (`ALTER PUBLICATION {publication_sql} DROP TABLE {sql}; ALTER PUBLICATION {publication_sql} ADD TABLE {sql};`)"
    )]
    KeyNotPublished {
        publication: String,
        publication_sql: String,
        table: String,
        sql: String,
        plural: &'static str,
        columns: String,
    },
    #[error(
        "primary key column{plural} {columns} of table {table} {is_are} generated, and {why}, so its changes cannot be tied to a row: {fix}"
    )]
    KeyGenerated {
        table: String,
        plural: &'static str,
        is_are: &'static str,
        columns: String,
        why: &'static str,
        fix: String,
    },
    #[error("reading the catalog of the source database ({what}): {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CatalogError {
    move |source| CatalogError::Sql { what, source }
}

/// Whether the publication exists.
pub async fn publication_exists(client: &Client, publication: &str) -> Result<bool, CatalogError> {
    let row = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(sql("looking up the publication"))?;
    Ok(row.is_some())
}

/// Describes every table of the publication, in a stable order, and refuses tables whose changes
/// the stream could not always tie to their primary key: no primary key, REPLICA IDENTITY
/// NOTHING, a replica identity index that leaves out a key column, or a key column that the
/// publication does not publish. `exclude` names tables (qualified) to leave out, such as
/// sluice's own.
pub async fn published_tables(
    client: &Client,
    publication: &str,
    exclude: &[&str],
) -> Result<Vec<PublishedTable>, CatalogError> {
    let split = published_tables_split(client, publication, exclude).await?;
    match split.refused.into_iter().next() {
        Some(refused) => Err(refused.reason),
        None => Ok(split.tables),
    }
}

/// A published table whose changes the stream could not tie to their primary key, and why.
#[derive(Debug)]
pub struct RefusedTable {
    pub oid: u32,
    /// Qualified name, as sluice names tables.
    pub table: String,
    /// Names the table and the fix (`ALTER TABLE ... ADD PRIMARY KEY`, `REPLICA IDENTITY`, ...).
    pub reason: CatalogError,
}

/// The tables of a publication: those sluice can stream, and those it refuses.
#[derive(Debug, Default)]
pub struct Publication {
    pub tables: Vec<PublishedTable>,
    pub refused: Vec<RefusedTable>,
}

/// Like [`published_tables`], but a table whose changes cannot be tied to its key is returned
/// among the refused ones instead of failing the whole publication; only a publication with
/// nothing usable at all is an error (the first refusal).
pub async fn published_tables_split(
    client: &Client,
    publication: &str,
    exclude: &[&str],
) -> Result<Publication, CatalogError> {
    if !publication_exists(client, publication).await? {
        let database: String = client
            .query_one("SELECT current_database()", &[])
            .await
            .map_err(sql("reading the database name"))?
            .get(0);
        return Err(CatalogError::MissingPublication {
            publication: publication.to_owned(),
            database,
        });
    }
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(sql("reading the server version"))?
        .get(0);
    // Which columns the stream carries: those of the column list (`attnames`, 15+), and of
    // those, before 18, not the generated ones (15 to 17 list them in `attnames` but never
    // stream them; 18 lists them only where the publication streams them).
    // The row filter (15+) is deparsed SQL over the table's unqualified column names.
    let (published_columns, row_filter) = if version >= 150000 {
        ("pt.attnames::text[]", "pt.rowfilter")
    } else {
        ("NULL::text[]", "NULL::text")
    };
    let rows = client
        .query(
            &format!(
                "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text, {published_columns}, {row_filter} \
                 FROM pg_publication_tables pt \
                 JOIN pg_namespace n ON n.nspname = pt.schemaname \
                 JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
                 WHERE pt.pubname = $1 ORDER BY n.nspname, c.relname"
            ),
            &[&publication],
        )
        .await
        .map_err(sql("listing the publication's tables"))?;
    let mut tables = Vec::with_capacity(rows.len());
    let mut refused = Vec::new();
    for row in rows {
        let oid: u32 = row.get(0);
        let schema: String = row.get(1);
        let name: String = row.get(2);
        let ident: String = row.get(3);
        let published: Option<Vec<String>> = row.get(4);
        let row_filter: Option<String> = row.get(5);
        let mut shape = TableSchema {
            oid,
            schema,
            name,
            replica_identity: match ident.as_str() {
                "n" => ReplicaIdentity::Nothing,
                "f" => ReplicaIdentity::Full,
                "i" => ReplicaIdentity::Index,
                _ => ReplicaIdentity::Default,
            },
            columns: Vec::new(),
            primary_key: Vec::new(),
            identity: Vec::new(),
        };
        let qualified = shape.qualified_name();
        if exclude.contains(&qualified.as_str()) {
            continue;
        }
        let columns = client
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod, \
                        coalesce((SELECT k.n FROM pg_index i, \
                                         unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
                                  WHERE i.indrelid = a.attrelid AND i.indisprimary \
                                    AND k.attnum = a.attnum), 0)::int4 AS key_pos, \
                        EXISTS (SELECT 1 FROM pg_index i \
                                WHERE i.indrelid = a.attrelid AND i.indisreplident \
                                  AND a.attnum = ANY (i.indkey)) AS in_identity_index, \
                        a.attgenerated::text AS generated, \
                        format_type(a.atttypid, a.atttypmod) AS type_name, \
                        (WITH RECURSIVE d(oid, base) AS ( \
                             SELECT t.oid, t.typbasetype FROM pg_type t WHERE t.oid = a.atttypid \
                             UNION ALL \
                             SELECT t.oid, t.typbasetype FROM pg_type t, d WHERE t.oid = d.base) \
                         SELECT ARRAY[bn.nspname::text, b.typname::text] \
                         FROM d JOIN pg_type b ON b.oid = d.oid \
                         JOIN pg_namespace bn ON bn.oid = b.typnamespace \
                         WHERE d.base = 0) AS base_type \
                 FROM pg_attribute a \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .map_err(sql("reading the columns of a published table"))?;
        let mut key_positions = Vec::new();
        let mut identity_index = Vec::new();
        let mut unpublished = Vec::new();
        let mut unstreamed = Vec::new();
        for c in &columns {
            let name: String = c.get(0);
            let key_pos: i32 = c.get(3);
            let generated: String = c.get(5);
            // 15 to 17 list generated columns in `attnames` but never stream them; 18 streams
            // stored ones it lists; virtual ones (18) are never streamed.
            let streamed = published.as_ref().is_none_or(|names| names.contains(&name))
                && match generated.as_str() {
                    "" => true,
                    "s" => version >= 180000,
                    _ => false,
                };
            if key_pos > 0 && !streamed {
                unpublished.push((name.clone(), !generated.is_empty()));
            }
            if !streamed {
                unstreamed.push(name);
                continue;
            }
            // Indexes into the streamed columns, which is what the shape holds.
            let i = shape.columns.len();
            if key_pos > 0 {
                key_positions.push((key_pos, i, c.get::<_, String>(6)));
            }
            if c.get::<_, bool>(4) {
                identity_index.push(i);
            }
            // A domain is presented as its base type, as the stream presents it (its Type
            // message names the base type).
            let base: Vec<String> = c.get(7);
            let type_oid = match base.as_slice() {
                [namespace, name] => presented_type(c.get(1), namespace, name),
                _ => c.get(1),
            };
            shape.columns.push(Column {
                name,
                type_oid,
                type_modifier: c.get(2),
                key: key_pos > 0,
            });
        }
        key_positions.sort();
        let key_types = key_positions.iter().map(|(_, _, t)| t.clone()).collect();
        shape.primary_key = key_positions.into_iter().map(|(_, i, _)| i).collect();
        shape.identity = match shape.replica_identity {
            ReplicaIdentity::Default => {
                let mut key = shape.primary_key.clone();
                key.sort();
                key
            }
            ReplicaIdentity::Full => (0..shape.columns.len()).collect(),
            ReplicaIdentity::Index => identity_index,
            ReplicaIdentity::Nothing => Vec::new(),
        };
        let sql_table = sql_name(&shape.schema, &shape.name);
        // A key column the stream leaves out is refused as such, before the shape (which
        // holds only streamed columns) is checked for a key.
        let generated: Vec<&str> = unpublished
            .iter()
            .filter(|(_, g)| *g)
            .map(|(n, _)| n.as_str())
            .collect();
        let refusal = if !generated.is_empty() {
            let (why, fix) = if version >= 180000 {
                (
                    "the publication does not publish generated columns",
                    format!(
                        "`ALTER PUBLICATION {} SET (publish_generated_columns = stored);`",
                        sql_ident(publication)
                    ),
                )
            } else {
                (
                    "PostgreSQL before 18 never streams generated columns",
                    "key the table by ordinary columns, or use PostgreSQL 18 with publish_generated_columns = stored".to_owned(),
                )
            };
            Some(CatalogError::KeyGenerated {
                table: qualified.clone(),
                plural: if generated.len() == 1 { "" } else { "s" },
                is_are: if generated.len() == 1 { "is" } else { "are" },
                columns: generated.join(", "),
                why,
                fix,
            })
        } else if !unpublished.is_empty() {
            let unpublished: Vec<&str> = unpublished.iter().map(|(n, _)| n.as_str()).collect();
            Some(CatalogError::KeyNotPublished {
                publication: publication.to_owned(),
                publication_sql: sql_ident(publication),
                table: qualified.clone(),
                sql: sql_table,
                plural: if unpublished.len() == 1 { "" } else { "s" },
                columns: unpublished.join(", "),
            })
        } else {
            key_refusal(client, &shape, &qualified, sql_table).await?
        };
        if let Some(reason) = refusal {
            refused.push(RefusedTable {
                oid,
                table: qualified,
                reason,
            });
            continue;
        }
        if !unstreamed.is_empty() {
            warn!(
                table = %qualified,
                columns = unstreamed.join(", "),
                "the stream does not carry these columns (the publication's column list leaves them out, or they are generated and not streamed): the rules see the table without them, in the snapshot as in the stream"
            );
        }
        tables.push(PublishedTable {
            schema: Arc::new(shape),
            row_filter,
            unstreamed,
            key_types,
        });
    }
    if tables.is_empty() {
        return Err(match refused.into_iter().next() {
            Some(refused) => refused.reason,
            None => CatalogError::EmptyPublication(publication.to_owned()),
        });
    }
    Ok(Publication { tables, refused })
}

/// Why the stream could not tie a table's changes to its primary key, if it could not.
async fn key_refusal(
    client: &Client,
    shape: &TableSchema,
    qualified: &str,
    sql_table: String,
) -> Result<Option<CatalogError>, CatalogError> {
    let oid = shape.oid;
    Ok(match shape.key_gap() {
        None => None,
        Some(KeyGap::NoPrimaryKey) => {
            let ri = if shape.replica_identity == ReplicaIdentity::Full {
                " (REPLICA IDENTITY FULL is not enough)"
            } else {
                ""
            };
            Some(CatalogError::NoPrimaryKey {
                table: qualified.to_owned(),
                sql: sql_table,
                ri,
            })
        }
        Some(KeyGap::IdentityNothing) => Some(CatalogError::ReplicaIdentityNothing {
            table: qualified.to_owned(),
            sql: sql_table,
        }),
        Some(KeyGap::IdentityLacks(missing)) => {
            let index: Option<String> = client
                .query_opt(
                    "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                     WHERE i.indrelid = $1 AND i.indisreplident",
                    &[&oid],
                )
                .await
                .map_err(sql("reading the replica identity index"))?
                .map(|r| r.get(0));
            Some(CatalogError::IdentityLacksKey {
                table: qualified.to_owned(),
                sql: sql_table,
                // A dropped identity index leaves the table behaving as NOTHING.
                index: index.unwrap_or_else(|| "(dropped)".to_owned()),
                plural: if missing.len() == 1 { "" } else { "s" },
                columns: missing.join(", "),
            })
        }
    })
}

/// A relation as the catalog names and keys it now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelationNow {
    /// (schema, table), or `None` when the relation no longer exists.
    pub name: Option<(String, String)>,
    /// Primary key column names in key order; empty without a key.
    pub primary_key: Vec<String>,
}

/// The current name and primary key of the table with `oid`. The stream asks this for every
/// Relation message, so that a key changed by `ALTER TABLE` is followed and a renamed table
/// keeps one name (its current one) for all its changes.
pub async fn relation_now(client: &Client, oid: u32) -> Result<RelationNow, CatalogError> {
    let row = client
        .query_opt(
            "SELECT n.nspname::text, c.relname::text, \
                    ARRAY(SELECT a.attname::text \
                          FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, n), pg_attribute a \
                          WHERE i.indrelid = c.oid AND i.indisprimary \
                            AND a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          ORDER BY k.n) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(sql("reading the name and primary key of a streamed table"))?;
    Ok(match row {
        None => RelationNow::default(),
        Some(r) => RelationNow {
            name: Some((r.get(0), r.get(1))),
            primary_key: r.get(2),
        },
    })
}

/// The current `table_name` (see [`crate::model::table_name`]) of each relation in `oids` that
/// still exists.
pub async fn table_names_now(
    client: &Client,
    oids: &[u32],
) -> Result<Vec<(u32, String)>, CatalogError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = ANY($1::oid[])",
            &[&oids],
        )
        .await
        .map_err(sql("reading the current names of streamed tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (schema, name): (String, String) = (r.get(1), r.get(2));
            (r.get(0), crate::model::table_name(&schema, &name))
        })
        .collect())
}

/// The tables the publication publishes now, as (OID, qualified name), without describing them:
/// the cheap question the stream asks periodically to notice tables that join or leave.
pub async fn published_oids(
    client: &Client,
    publication: &str,
) -> Result<Vec<(u32, String)>, CatalogError> {
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text \
             FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname = $1 ORDER BY 1",
            &[&publication],
        )
        .await
        .map_err(sql("listing the publication's tables"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (schema, name): (String, String) = (r.get(1), r.get(2));
            (r.get(0), crate::model::qualified_name(&schema, &name))
        })
        .collect())
}

/// `name`, or `schema.name`, each part quoted only where SQL needs it: the form error messages
/// use in the SQL they suggest.
pub fn sql_name(schema: &str, name: &str) -> String {
    if schema == "public" || schema.is_empty() {
        sql_ident(name)
    } else {
        format!("{}.{}", sql_ident(schema), sql_ident(name))
    }
}

/// An identifier for SQL text in a message: as it is where SQL reads it unquoted, quoted
/// otherwise.
pub fn sql_ident(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        quote_ident(name)
    }
}

/// Quotes an identifier for SQL text, as `quote_ident` does.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal for SQL text (standard_conforming_strings is on in every supported
/// PostgreSQL).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl PublishedTable {
    /// `"schema"."table"`, quoted for SQL.
    pub fn sql_name(&self) -> String {
        format!(
            "{}.{}",
            quote_ident(&self.schema.schema),
            quote_ident(&self.schema.name)
        )
    }

    /// A key, given as its columns' texts in key order, as a SQL row of literals cast to the key
    /// columns' types: `(CAST('42' AS integer), CAST('(1,"a b")' AS pair))`. Compared with the
    /// key's columns, it uses the primary key's btree order and index. The casts matter: an
    /// untyped literal cannot take a row type ("input of anonymous composite types is not
    /// implemented").
    pub fn key_literal(&self, texts: &[String]) -> String {
        let lits: Vec<String> = texts
            .iter()
            .zip(&self.key_types)
            .map(|(v, t)| format!("CAST({} AS {t})", quote_literal(v)))
            .collect();
        format!("({})", lits.join(", "))
    }
}
