//! Replication commands on a `replication=database` connection: IDENTIFY_SYSTEM,
//! CREATE_REPLICATION_SLOT and START_REPLICATION.

use std::time::Duration;

use postgres_protocol::message::frontend;

use crate::model::Lsn;
use crate::pg::PgConfig;

use super::error::{ServerError, SourceError};
use super::stream::ReplicationStream;
use super::wire::{Rows, Wire};

/// Result of IDENTIFY_SYSTEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SystemInfo {
    pub system_id: String,
    pub timeline: u32,
    /// Current WAL flush location.
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// Whether CREATE_REPLICATION_SLOT exports a snapshot for the initial copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotAction {
    /// `EXPORT_SNAPSHOT`: the snapshot stays importable until the next command on this
    /// connection, so import it (`SET TRANSACTION SNAPSHOT`) elsewhere before streaming.
    Export,
    NoExport,
}

/// Result of CREATE_REPLICATION_SLOT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    pub slot_name: String,
    /// Streaming from here continues exactly where the exported snapshot ends.
    pub consistent_point: Lsn,
    pub snapshot_name: Option<String>,
}

/// Settings of START_REPLICATION and of the stream it opens.
#[derive(Clone, Debug)]
pub struct StartOptions {
    pub slot: String,
    /// Where to resume; `Lsn::ZERO` means the slot's confirmed position.
    pub start_lsn: Lsn,
    pub publications: Vec<String>,
    /// How often a standby status update is sent even when nothing changes.
    pub status_interval: Duration,
    /// Decoded events buffered between the socket reader and the consumer; when full, the
    /// socket is not read (backpressure).
    pub channel_capacity: usize,
}

impl StartOptions {
    pub fn new(slot: impl Into<String>, publications: Vec<String>) -> Self {
        StartOptions {
            slot: slot.into(),
            start_lsn: Lsn::ZERO,
            publications,
            status_interval: Duration::from_secs(10),
            channel_capacity: 4096,
        }
    }
}

/// A replication connection, ready for commands.
pub struct ReplicationConnection {
    wire: Wire,
}

impl ReplicationConnection {
    /// Connects with `replication=database`, authenticates and checks the server version.
    pub async fn connect(cfg: &PgConfig) -> Result<Self, SourceError> {
        let wire = Wire::connect(cfg, true).await?;
        Ok(ReplicationConnection { wire })
    }

    /// Server parameter reported at startup, e.g. `server_version`.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.wire.params.get(name).map(String::as_str)
    }

    pub async fn identify_system(&mut self) -> Result<SystemInfo, SourceError> {
        let rows = self
            .command("IDENTIFY_SYSTEM", "IDENTIFY_SYSTEM", None)
            .await?;
        let get = |c: &str| rows.get(0, c).map(str::to_owned);
        let xlogpos = get("xlogpos").unwrap_or_default();
        Ok(SystemInfo {
            system_id: get("systemid").unwrap_or_default(),
            timeline: get("timeline").and_then(|t| t.parse().ok()).unwrap_or(0),
            xlogpos: xlogpos
                .parse()
                .map_err(|_| self.bad_reply("IDENTIFY_SYSTEM", "xlogpos"))?,
            dbname: get("dbname"),
        })
    }

    /// Creates a logical slot using `pgoutput`; a failover slot where the server has them
    /// (PostgreSQL 17+), so that a promoted physical standby of the source still has it.
    pub async fn create_slot(
        &mut self,
        slot: &str,
        snapshot: SnapshotAction,
    ) -> Result<SlotInfo, SourceError> {
        self.create(slot, "", snapshot).await
    }

    /// Creates a slot that the server drops when this connection ends (`sluice tail`'s
    /// default: nothing is left behind to pin WAL).
    pub async fn create_temporary_slot(&mut self, slot: &str) -> Result<SlotInfo, SourceError> {
        self.create(slot, " TEMPORARY", SnapshotAction::NoExport)
            .await
    }

    async fn create(
        &mut self,
        slot: &str,
        temporary: &str,
        snapshot: SnapshotAction,
    ) -> Result<SlotInfo, SourceError> {
        validate_slot_name(slot)?;
        let major =
            super::wire::check_server_version(self.parameter("server_version").unwrap_or(""))?;
        let sql = create_slot_sql(slot, temporary, snapshot, major);
        let rows = self
            .command(&sql, "creating the replication slot", Some(slot))
            .await?;
        let point = rows.get(0, "consistent_point").unwrap_or_default();
        Ok(SlotInfo {
            slot_name: rows.get(0, "slot_name").unwrap_or(slot).to_owned(),
            consistent_point: point
                .parse()
                .map_err(|_| self.bad_reply("CREATE_REPLICATION_SLOT", "consistent_point"))?,
            snapshot_name: rows.get(0, "snapshot_name").map(str::to_owned),
        })
    }

    /// Checks the publications exist, then starts streaming from the slot.
    pub async fn start_replication(
        mut self,
        opts: StartOptions,
    ) -> Result<ReplicationStream, SourceError> {
        validate_slot_name(&opts.slot)?;
        if opts.publications.is_empty() {
            return Err(SourceError::PublicationMissing {
                names: vec![],
                database: self.wire.database.clone(),
            });
        }
        self.check_publications(&opts.publications).await?;
        let names = opts
            .publications
            .iter()
            .map(|p| quote_ident(p))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {} (proto_version '1', publication_names {}, messages 'true')",
            opts.slot,
            opts.start_lsn,
            quote_literal(&names)
        );
        self.wire
            .send_raw(|buf| {
                // Encoding only fails for interior NUL bytes, which quote_* never produce.
                let _ = frontend::query(&sql, buf);
            })
            .await?;
        loop {
            let frame = self
                .wire
                .reader
                .next()
                .await
                .map_err(|e| self.wire.lost("starting replication", e))?;
            match frame.tag {
                b'W' => break,
                b'E' => {
                    let e = super::wire::parse_error(&frame.body);
                    return Err(classify(e, "starting replication", &opts.slot, &self.wire));
                }
                b'N' => super::wire::log_notice(&frame.body),
                b'S' => {}
                other => {
                    return Err(SourceError::Protocol {
                        context: "starting replication".to_owned(),
                        what: format!("expected CopyBothResponse, got {:?}", char::from(other)),
                    });
                }
            }
        }
        Ok(ReplicationStream::spawn(self.wire, opts))
    }

    /// Ends the session cleanly.
    pub async fn close(mut self) -> Result<(), SourceError> {
        self.wire.send_raw(frontend::terminate).await
    }

    async fn check_publications(&mut self, names: &[String]) -> Result<(), SourceError> {
        let list = names
            .iter()
            .map(|n| quote_literal(n))
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT n FROM unnest(ARRAY[{list}]::text[]) AS n \
             WHERE n NOT IN (SELECT pubname FROM pg_catalog.pg_publication)"
        );
        let rows = self
            .command(&sql, "checking the publications", None)
            .await?;
        let missing: Vec<String> = rows
            .rows
            .iter()
            .filter_map(|r| r.first().cloned().flatten())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(SourceError::PublicationMissing {
                names: missing,
                database: self.wire.database.clone(),
            })
        }
    }

    async fn command(
        &mut self,
        sql: &str,
        context: &str,
        slot: Option<&str>,
    ) -> Result<Rows, SourceError> {
        match self.wire.simple_query(sql).await? {
            Ok(mut sets) => Ok(sets.pop().unwrap_or_default()),
            Err(e) => match classify(e, context, slot.unwrap_or(""), &self.wire) {
                SourceError::WalLevel { .. } => {
                    // wal_level is not reported at startup: ask, so the message names it.
                    let current = match self.wire.simple_query("SHOW wal_level").await? {
                        Ok(sets) => sets
                            .last()
                            .and_then(|r| r.rows.first())
                            .and_then(|r| r.first().cloned().flatten()),
                        Err(_) => None,
                    };
                    Err(SourceError::WalLevel {
                        current: current.unwrap_or_else(|| "unknown".to_owned()),
                    })
                }
                other => Err(other),
            },
        }
    }

    fn bad_reply(&self, command: &str, field: &str) -> SourceError {
        SourceError::Protocol {
            context: command.to_owned(),
            what: format!("the reply has no valid {field}"),
        }
    }
}

/// The CREATE_REPLICATION_SLOT command for a server of major version `major`.
fn create_slot_sql(slot: &str, temporary: &str, snapshot: SnapshotAction, major: u32) -> String {
    // A temporary slot cannot be a failover slot: it ends with its connection.
    if major >= 17 && temporary.is_empty() {
        // FAILOVER exists from 17 on, in the option-list syntax that 15 introduced.
        let action = match snapshot {
            SnapshotAction::Export => "export",
            SnapshotAction::NoExport => "nothing",
        };
        format!("CREATE_REPLICATION_SLOT {slot} LOGICAL pgoutput (SNAPSHOT '{action}', FAILOVER)")
    } else {
        // The pre-15 syntax, which PostgreSQL 14 and later all accept.
        let action = match snapshot {
            SnapshotAction::Export => "EXPORT_SNAPSHOT",
            SnapshotAction::NoExport => "NOEXPORT_SNAPSHOT",
        };
        format!("CREATE_REPLICATION_SLOT {slot}{temporary} LOGICAL pgoutput {action}")
    }
}

/// Maps server errors with a known cause to the error that names the fix.
pub(crate) fn classify(e: ServerError, context: &str, slot: &str, wire: &Wire) -> SourceError {
    let msg = e.message.as_str();
    match e.code.as_str() {
        "55000" if msg.contains("wal_level") => SourceError::WalLevel {
            current: wire
                .params
                .get("wal_level")
                .cloned()
                .unwrap_or_else(|| "replica or minimal".to_owned()),
        },
        "42501" if e.lacks_replication() => SourceError::LacksReplication {
            user: wire.user.clone(),
        },
        "42704" if msg.starts_with("replication slot") => SourceError::SlotMissing {
            slot: slot.to_owned(),
        },
        "42704" if msg.starts_with("publication") => SourceError::PublicationMissing {
            names: vec![quoted_name(msg).unwrap_or_default()],
            database: wire.database.clone(),
        },
        "55006" if msg.starts_with("replication slot") => SourceError::SlotActive {
            slot: slot.to_owned(),
            pid: msg
                .rsplit(' ')
                .next()
                .and_then(|p| p.trim_end_matches('.').parse().ok())
                .unwrap_or(0),
        },
        "42710" => SourceError::SlotExists {
            slot: slot.to_owned(),
        },
        _ => SourceError::Server {
            context: context.to_owned(),
            server: Box::new(e),
        },
    }
}

/// The first `"quoted"` name in a server message.
fn quoted_name(msg: &str) -> Option<String> {
    let start = msg.find('"')? + 1;
    let len = msg[start..].find('"')?;
    Some(msg[start..start + len].to_owned())
}

/// Slot names are restricted by PostgreSQL to `[a-z0-9_]{1,63}`; checking here lets us put them
/// in commands unquoted and give a clear error.
fn validate_slot_name(slot: &str) -> Result<(), SourceError> {
    let ok = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SourceError::InvalidSlotName {
            slot: slot.to_owned(),
        })
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('\0', "").replace('"', "\"\""))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\0', "").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident(r#"we"ird"#), r#""we""ird""#);
        assert_eq!(quote_literal(r#""a","b's""#), r#"'"a","b''s"'"#);
        assert!(validate_slot_name("sluice_1").is_ok());
        assert_eq!(
            create_slot_sql("s", "", SnapshotAction::Export, 17),
            "CREATE_REPLICATION_SLOT s LOGICAL pgoutput (SNAPSHOT 'export', FAILOVER)"
        );
        assert_eq!(
            create_slot_sql("s", "", SnapshotAction::NoExport, 18),
            "CREATE_REPLICATION_SLOT s LOGICAL pgoutput (SNAPSHOT 'nothing', FAILOVER)"
        );
        assert_eq!(
            create_slot_sql("s", "", SnapshotAction::Export, 16),
            "CREATE_REPLICATION_SLOT s LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
        assert_eq!(
            create_slot_sql("t", " TEMPORARY", SnapshotAction::NoExport, 17),
            "CREATE_REPLICATION_SLOT t TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT"
        );
        assert_eq!(
            validate_slot_name("Bad-Name").unwrap_err().to_string(),
            "replication slot name \"Bad-Name\" is invalid: use 1 to 63 lowercase letters, digits and underscores"
        );
    }
}
