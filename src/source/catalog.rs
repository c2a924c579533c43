//! What the source database says about the published tables: names, columns, types and keys.
//!
//! Read over an ordinary SQL connection at start, to refuse unusable tables before streaming,
//! and by the snapshot, which has no Relation messages to learn the shape from.

use std::sync::Arc;

use tokio_postgres::Client;

use crate::model::{Column, ReplicaIdentity, TableSchema};

/// A published table as the catalog describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct PublishedTable {
    pub schema: Arc<TableSchema>,
    /// Column indexes of the primary key (or replica identity index), in key order.
    pub key: Vec<usize>,
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
        "table {table} has no primary key{ri}: sluice identifies rows by their key. Add one with `ALTER TABLE {table} ADD PRIMARY KEY (...)`, or remove the table from the publication"
    )]
    NoPrimaryKey { table: String, ri: &'static str },
    #[error(
        "table {table} has REPLICA IDENTITY NOTHING, so PostgreSQL does not send which row an update or delete touched: run `ALTER TABLE {table} REPLICA IDENTITY DEFAULT;`"
    )]
    ReplicaIdentityNothing { table: String },
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

/// Describes every table of the publication, in a stable order, and refuses tables without a
/// usable key. `exclude` names tables (qualified) to leave out, such as sluice's own.
pub async fn published_tables(
    client: &Client,
    publication: &str,
    exclude: &[&str],
) -> Result<Vec<PublishedTable>, CatalogError> {
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
    let rows = client
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relreplident::text \
             FROM pg_publication_tables pt \
             JOIN pg_namespace n ON n.nspname = pt.schemaname \
             JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
             WHERE pt.pubname = $1 ORDER BY n.nspname, c.relname",
            &[&publication],
        )
        .await
        .map_err(sql("listing the publication's tables"))?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let oid: u32 = row.get(0);
        let schema: String = row.get(1);
        let name: String = row.get(2);
        let ident: String = row.get(3);
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
        };
        let qualified = shape.qualified_name();
        if exclude.contains(&qualified.as_str()) {
            continue;
        }
        let columns = client
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod, \
                        coalesce((SELECT k.n FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
                                  WHERE k.attnum = a.attnum), 0)::int4 AS key_pos \
                 FROM pg_attribute a \
                 LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary \
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .map_err(sql("reading the columns of a published table"))?;
        let mut key_positions = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            let key_pos: i32 = c.get(3);
            if key_pos > 0 {
                key_positions.push((key_pos, i));
            }
            shape.columns.push(Column {
                name: c.get(0),
                type_oid: c.get(1),
                type_modifier: c.get(2),
                key: key_pos > 0,
            });
        }
        key_positions.sort();
        let key: Vec<usize> = key_positions.into_iter().map(|(_, i)| i).collect();
        if shape.replica_identity == ReplicaIdentity::Nothing {
            return Err(CatalogError::ReplicaIdentityNothing { table: qualified });
        }
        if key.is_empty() {
            let ri = if shape.replica_identity == ReplicaIdentity::Full {
                " (REPLICA IDENTITY FULL is not enough)"
            } else {
                ""
            };
            return Err(CatalogError::NoPrimaryKey {
                table: qualified,
                ri,
            });
        }
        tables.push(PublishedTable {
            schema: Arc::new(shape),
            key,
        });
    }
    if tables.is_empty() {
        return Err(CatalogError::EmptyPublication(publication.to_owned()));
    }
    Ok(tables)
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
}
