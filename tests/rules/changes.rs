//! Building `model::Change`s for library-level tests.

use std::sync::Arc;

use sluice::model::{Change, Column, Lsn, Operation, ReplicaIdentity, TableSchema, Value};

pub fn table(schema: &str, name: &str, columns: &[(&str, u32)]) -> Arc<TableSchema> {
    Arc::new(TableSchema {
        oid: 0,
        schema: schema.into(),
        name: name.into(),
        replica_identity: ReplicaIdentity::Default,
        columns: columns
            .iter()
            .enumerate()
            .map(|(i, (name, oid))| Column {
                name: (*name).into(),
                type_oid: *oid,
                type_modifier: -1,
                key: i == 0,
            })
            .collect(),
        primary_key: vec![0],
        identity: vec![0],
    })
}

/// `items(id int8, title text, user_id text)`.
pub fn items() -> Arc<TableSchema> {
    table(
        "public",
        "items",
        &[("id", 20), ("title", 25), ("user_id", 25)],
    )
}

pub fn insert(table: &Arc<TableSchema>, new: Vec<Value>) -> Change {
    Change {
        table: Arc::clone(table),
        op: Operation::Insert,
        new: Some(new),
        old: None,
        lsn: Lsn(0x16_B374_D848),
    }
}

/// An `items` insert with this id and title, owned by `u<id>`.
pub fn item(table: &Arc<TableSchema>, id: i64, title: &str) -> Change {
    insert(
        table,
        vec![
            Value::Int(id),
            Value::Text(title.into()),
            Value::Text(format!("u{id}")),
        ],
    )
}
