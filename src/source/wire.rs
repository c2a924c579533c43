//! The frontend side of the PostgreSQL wire protocol for a replication connection: socket,
//! SSLRequest + rustls, startup, authentication (cleartext, md5, SCRAM-SHA-256) and the simple
//! query protocol. Framing is done here; postgres-protocol supplies the message encoders and
//! the authentication primitives.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::pg::{Host, PgConfig, SslMode, client_config, server_name};

use super::error::{ServerError, SourceError};

pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub(crate) type BoxStream = Box<dyn Stream>;

/// One backend message: its type byte and body (without the length word).
pub(crate) struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

/// Reads whole frames from a byte stream.
pub(crate) struct FrameReader<R> {
    pub io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// A complete frame is buffered: [`FrameReader::next`] returns without reading the socket.
    pub fn has_frame(&self) -> bool {
        self.buf.len() >= 5
            && usize::try_from(i32::from_be_bytes([
                self.buf[1],
                self.buf[2],
                self.buf[3],
                self.buf[4],
            ]))
            .is_ok_and(|len| self.buf.len() > len)
    }

    /// Next frame; `Err(UnexpectedEof)` when the server closes the socket.
    pub async fn next(&mut self) -> std::io::Result<Frame> {
        loop {
            if self.buf.len() >= 5 {
                let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| *l >= 4)
                    .ok_or_else(|| {
                        std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("invalid message length {len}"),
                        )
                    })?;
                if self.buf.len() > len {
                    let mut frame = self.buf.split_to(len + 1);
                    let tag = frame[0];
                    frame.advance(5);
                    return Ok(Frame {
                        tag,
                        body: frame.freeze(),
                    });
                }
                // Read the rest of a large message (WAL data can be hundreds of MB) in one go.
                self.buf.reserve(len + 1 - self.buf.len());
            } else if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.io.read_buf(&mut self.buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// Parses an ErrorResponse or NoticeResponse body.
pub(crate) fn parse_error(body: &[u8]) -> ServerError {
    let mut e = ServerError {
        severity: String::new(),
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match field {
            b'V' => e.severity = value,
            b'S' if e.severity.is_empty() => e.severity = value,
            b'C' => e.code = value,
            b'M' => e.message = value,
            b'D' => e.detail = Some(value),
            b'H' => e.hint = Some(value),
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    e
}

/// Logs a NoticeResponse of the replication connection as the SQL connections' are logged.
pub(crate) fn log_notice(body: &[u8]) {
    let n = parse_error(body);
    crate::pg::log_notice(&n.severity, &n.code, &n.message);
}

/// Result set of one simple-query statement, in text form.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Rows {
    pub fn get(&self, row: usize, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.get(row)?.get(i)?.as_deref()
    }
}

/// An authenticated connection, before it is split for streaming.
pub(crate) struct Wire {
    pub reader: FrameReader<tokio::io::ReadHalf<BoxStream>>,
    pub writer: tokio::io::WriteHalf<BoxStream>,
    pub params: HashMap<String, String>,
    pub target: String,
    pub user: String,
    pub database: String,
    wbuf: BytesMut,
}

fn io_protocol(context: &str, e: std::io::Error) -> SourceError {
    SourceError::Protocol {
        context: context.to_owned(),
        what: e.to_string(),
    }
}

impl Wire {
    /// Opens, secures and authenticates a connection. `replication` adds `replication=database`.
    pub async fn connect(cfg: &PgConfig, replication: bool) -> Result<Wire, SourceError> {
        let target = cfg.target();
        let connect_err = |source| SourceError::Connect {
            target: target.clone(),
            source,
        };
        let open = async {
            let stream: BoxStream = match &cfg.host {
                Host::Unix(dir) => {
                    let path = dir.join(format!(".s.PGSQL.{}", cfg.port));
                    Box::new(
                        tokio::net::UnixStream::connect(path)
                            .await
                            .map_err(connect_err)?,
                    )
                }
                Host::Tcp(host) => {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), cfg.port))
                        .await
                        .map_err(connect_err)?;
                    // Status updates and keepalive replies are tiny and latency-sensitive.
                    let _ = tcp.set_nodelay(true);
                    negotiate_tls(cfg, tcp, &target).await?
                }
            };
            Ok::<_, SourceError>(stream)
        };
        let stream = match cfg.connect_timeout {
            Some(t) => tokio::time::timeout(t, open).await.map_err(|_| {
                connect_err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection within connect_timeout={}s", t.as_secs()),
                ))
            })??,
            None => open.await?,
        };
        let (r, w) = tokio::io::split(stream);
        let mut wire = Wire {
            reader: FrameReader::new(r),
            writer: w,
            params: HashMap::new(),
            target,
            user: cfg.user.clone(),
            database: cfg.dbname.clone(),
            wbuf: BytesMut::with_capacity(1024),
        };
        wire.startup(cfg, replication).await?;
        Ok(wire)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let out = self.wbuf.split();
        self.writer.write_all(&out).await?;
        self.writer.flush().await
    }

    async fn startup(&mut self, cfg: &PgConfig, replication: bool) -> Result<(), SourceError> {
        let mut params: Vec<(&str, &str)> = vec![
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            ("client_encoding", "UTF8"),
        ];
        // The walsender renders values with these settings: see source::values. Startup
        // parameters win over the database's and the role's defaults.
        params.extend(super::values::CANONICAL_SETTINGS);
        if replication {
            params.push(("replication", "database"));
        }
        params.push(("application_name", cfg.application_name()));
        if let Some(o) = &cfg.options {
            params.push(("options", o));
        }
        frontend::startup_message(params.iter().copied(), &mut self.wbuf)
            .map_err(|e| io_protocol("encoding the startup message", e))?;
        self.flush().await.map_err(|e| self.lost("startup", e))?;

        let mut scram: Option<sasl::ScramSha256> = None;
        loop {
            let frame = self
                .reader
                .next()
                .await
                .map_err(|e| self.lost("authentication", e))?;
            match frame.tag {
                b'R' => {
                    let mut body = frame.body;
                    if body.len() < 4 {
                        return Err(self.protocol("authentication", "short authentication request"));
                    }
                    let code = body.get_i32();
                    match code {
                        0 => {}
                        3 => {
                            let pw = self.password(cfg)?;
                            frontend::password_message(pw.as_bytes(), &mut self.wbuf)
                                .map_err(|e| io_protocol("sending the password", e))?;
                            self.flush()
                                .await
                                .map_err(|e| self.lost("authentication", e))?;
                        }
                        5 => {
                            if body.len() < 4 {
                                return Err(self.protocol("authentication", "short md5 salt"));
                            }
                            let salt = [body[0], body[1], body[2], body[3]];
                            let pw = self.password(cfg)?;
                            let hash = md5_hash(cfg.user.as_bytes(), pw.as_bytes(), salt);
                            frontend::password_message(hash.as_bytes(), &mut self.wbuf)
                                .map_err(|e| io_protocol("sending the md5 password", e))?;
                            self.flush()
                                .await
                                .map_err(|e| self.lost("authentication", e))?;
                        }
                        10 => {
                            let offered: Vec<String> = body
                                .split(|&b| b == 0)
                                .filter(|m| !m.is_empty())
                                .map(|m| String::from_utf8_lossy(m).into_owned())
                                .collect();
                            if !offered.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                                return Err(SourceError::UnsupportedAuth {
                                    target: self.target.clone(),
                                    method: format!("SASL ({})", offered.join(", ")),
                                });
                            }
                            let pw = self.password(cfg)?;
                            // Channel binding is not offered ("n"), which servers accept.
                            let s = sasl::ScramSha256::new(
                                pw.as_bytes(),
                                sasl::ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response(
                                sasl::SCRAM_SHA_256,
                                s.message(),
                                &mut self.wbuf,
                            )
                            .map_err(|e| io_protocol("starting SCRAM", e))?;
                            scram = Some(s);
                            self.flush()
                                .await
                                .map_err(|e| self.lost("authentication", e))?;
                        }
                        11 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                self.protocol("authentication", "SASL continue before SASL start")
                            })?;
                            s.update(&body)
                                .map_err(|e| io_protocol("SCRAM exchange", e))?;
                            frontend::sasl_response(s.message(), &mut self.wbuf)
                                .map_err(|e| io_protocol("SCRAM exchange", e))?;
                            self.flush()
                                .await
                                .map_err(|e| self.lost("authentication", e))?;
                        }
                        12 => {
                            let s = scram.as_mut().ok_or_else(|| {
                                self.protocol("authentication", "SASL final before SASL start")
                            })?;
                            // A wrong server signature means the server does not know the password.
                            s.finish(&body).map_err(|e| SourceError::Protocol {
                                context: "verifying the server's SCRAM signature".to_owned(),
                                what: e.to_string(),
                            })?;
                        }
                        other => {
                            let method = match other {
                                2 => "Kerberos V5",
                                6 => "SCM credentials",
                                7 | 8 => "GSSAPI",
                                9 => "SSPI",
                                _ => "unknown",
                            };
                            return Err(SourceError::UnsupportedAuth {
                                target: self.target.clone(),
                                method: format!("{method} (code {other})"),
                            });
                        }
                    }
                }
                b'E' => return Err(self.classify_startup_error(parse_error(&frame.body))),
                b'S' => {
                    let mut parts = frame.body.split(|&b| b == 0);
                    if let (Some(k), Some(v)) = (parts.next(), parts.next()) {
                        self.params.insert(
                            String::from_utf8_lossy(k).into_owned(),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
                b'N' => log_notice(&frame.body),
                b'K' => {}
                b'Z' => break,
                other => {
                    return Err(self.protocol(
                        "startup",
                        &format!("unexpected message {:?}", char::from(other)),
                    ));
                }
            }
        }
        let version = self
            .params
            .get("server_version")
            .cloned()
            .unwrap_or_default();
        check_server_version(&version)?;
        Ok(())
    }

    fn password<'c>(&self, cfg: &'c PgConfig) -> Result<&'c str, SourceError> {
        cfg.password
            .as_deref()
            .ok_or_else(|| SourceError::PasswordRequired {
                user: cfg.user.clone(),
                target: self.target.clone(),
            })
    }

    fn classify_startup_error(&self, e: ServerError) -> SourceError {
        match e.code.as_str() {
            "28P01" => SourceError::WrongPassword {
                user: self.user.clone(),
                target: self.target.clone(),
            },
            "42501" if e.lacks_replication() => SourceError::LacksReplication {
                user: self.user.clone(),
            },
            "28000" => SourceError::HbaRejected {
                target: self.target.clone(),
                user: self.user.clone(),
                server: Box::new(e),
            },
            _ => SourceError::Server {
                context: format!("connecting to {}", self.target),
                server: Box::new(e),
            },
        }
    }

    pub fn lost(&self, context: &str, e: std::io::Error) -> SourceError {
        SourceError::Io {
            context: format!("{context} with {}", self.target),
            source: e,
        }
    }

    fn protocol(&self, context: &str, what: &str) -> SourceError {
        SourceError::Protocol {
            context: format!("{context} with {}", self.target),
            what: what.to_owned(),
        }
    }

    /// Sends one simple query. Returns its result sets, or the server's error.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Result<Vec<Rows>, ServerError>, SourceError> {
        frontend::query(sql, &mut self.wbuf).map_err(|e| io_protocol("encoding a query", e))?;
        self.flush()
            .await
            .map_err(|e| self.lost("sending a command", e))?;
        let mut results = Vec::new();
        let mut current = Rows::default();
        let mut error = None;
        loop {
            let frame = self
                .reader
                .next()
                .await
                .map_err(|e| self.lost("reading a command result", e))?;
            match frame.tag {
                b'T' => {
                    current.columns = parse_row_description(&frame.body).ok_or_else(|| {
                        self.protocol("reading a command result", "malformed RowDescription")
                    })?
                }
                b'D' => current
                    .rows
                    .push(parse_data_row(&frame.body).ok_or_else(|| {
                        self.protocol("reading a command result", "malformed DataRow")
                    })?),
                b'C' | b'I' => results.push(std::mem::take(&mut current)),
                b'E' => error = Some(parse_error(&frame.body)),
                b'Z' => break,
                b'N' => log_notice(&frame.body),
                b'S' | b'K' => {}
                other => {
                    return Err(self.protocol(
                        "reading a command result",
                        &format!("unexpected message {:?}", char::from(other)),
                    ));
                }
            }
        }
        Ok(match error {
            Some(e) => Err(e),
            None => Ok(results),
        })
    }

    /// Queues a frontend message built by `f`, and flushes.
    pub async fn send_raw(&mut self, f: impl FnOnce(&mut BytesMut)) -> Result<(), SourceError> {
        f(&mut self.wbuf);
        self.flush()
            .await
            .map_err(|e| self.lost("sending a command", e))
    }
}

/// Refuses servers older than PostgreSQL 14 (pgoutput messages and slot behaviour sluice needs).
pub(crate) fn check_server_version(version: &str) -> Result<u32, SourceError> {
    let major: u32 = version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 14 {
        return Err(SourceError::ServerTooOld {
            version: if version.is_empty() {
                "(unknown)".to_owned()
            } else {
                version.to_owned()
            },
        });
    }
    Ok(major)
}

fn parse_row_description(body: &[u8]) -> Option<Vec<String>> {
    let n = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let end = rest.iter().position(|&b| b == 0)?;
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = rest.get(end + 1 + 18..)?;
    }
    Some(out)
}

fn parse_data_row(body: &[u8]) -> Option<Vec<Option<String>>> {
    let n = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
        } else {
            let len = len as usize;
            out.push(Some(String::from_utf8_lossy(rest.get(..len)?).into_owned()));
            rest = &rest[len..];
        }
    }
    Some(out)
}

async fn negotiate_tls(
    cfg: &PgConfig,
    mut tcp: tokio::net::TcpStream,
    target: &str,
) -> Result<BoxStream, SourceError> {
    if cfg.sslmode == SslMode::Disable {
        return Ok(Box::new(tcp));
    }
    let handshake_err = |source| SourceError::TlsHandshake {
        target: target.to_owned(),
        source,
    };
    let mut buf = BytesMut::with_capacity(8);
    frontend::ssl_request(&mut buf);
    tcp.write_all(&buf).await.map_err(handshake_err)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(handshake_err)?;
    match answer[0] {
        b'S' => {
            let config = Arc::new(client_config(cfg)?);
            let name = server_name(cfg)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(handshake_err)?;
            Ok(Box::new(tls))
        }
        b'N' if cfg.sslmode == SslMode::Prefer => Ok(Box::new(tcp)),
        b'N' => Err(SourceError::TlsRefused {
            target: target.to_owned(),
            sslmode: cfg.sslmode.as_str(),
        }),
        other => Err(SourceError::Protocol {
            context: format!("TLS negotiation with {target}"),
            what: format!("unexpected SSLRequest answer {:?}", char::from(other)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_version_gate() {
        assert_eq!(
            check_server_version("15.4 (Debian 15.4-1.pgdg120+1)").unwrap(),
            15
        );
        assert_eq!(check_server_version("14beta1").unwrap(), 14);
        assert_eq!(
            check_server_version("13.11").unwrap_err().to_string(),
            "PostgreSQL 13.11 is too old: sluice needs PostgreSQL 14 or newer; upgrade the server"
        );
    }

    #[test]
    fn error_fields() {
        let body = b"SERROR\0VERROR\0C42704\0Mslot missing\0Hcreate it\0\0";
        let e = parse_error(body);
        assert_eq!(e.code, "42704");
        assert_eq!(
            e.to_string(),
            "ERROR: slot missing (SQLSTATE 42704); hint: create it"
        );
    }
}
