//! The admin listener's bearer token: where it comes from, when one is required, and checking a
//! request's `Authorization` header against it.
//!
//! The token is a shared secret, so it is kept out of every `Debug`, log line, error message and
//! metric: a [`TokenText`] prints as `<redacted>`, and the listener keeps only the token's SHA-256
//! ([`AdminToken`]). Comparing digests in constant time leaks neither the token's bytes nor its
//! length through response timing.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Environment variable holding the token itself.
pub const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";
/// Environment variable naming a file that holds the token.
pub const TOKEN_FILE_ENV: &str = "SLUICE_ADMIN_TOKEN_FILE";
/// Shorter tokens are refused: the token is the only thing between the network and the power to
/// load any module file on the host.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why no usable token could be read, or why the listener must not start without one. None of
/// these messages contain the token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "cannot read the admin token file {path} (admin_token_file / --admin-token-file / SLUICE_ADMIN_TOKEN_FILE): {source}"
    )]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the admin token from {origin} is {problem}: use at least {MIN_TOKEN_LEN} printable ASCII characters without spaces, e.g. `openssl rand -hex 32 > /etc/sluice/admin-token`"
    )]
    Unusable { origin: String, problem: String },
    #[error(
        "both SLUICE_ADMIN_TOKEN and an admin token file ({path}) are set: give the token one way only"
    )]
    Ambiguous { path: PathBuf },
    #[error(
        "the admin listener {addr} is not a loopback address and no admin token is configured: anyone who can reach it could load a rules module or rewrite memberships. Set admin_token_file (or --admin-token-file, SLUICE_ADMIN_TOKEN_FILE) or SLUICE_ADMIN_TOKEN, or listen on 127.0.0.1"
    )]
    Exposed { addr: SocketAddr },
}

/// The token's text, as read from its file or variable. Only the admin clients need the text
/// itself (to send it); `Debug` never shows it.
#[derive(Clone)]
pub struct TokenText(String);

impl TokenText {
    /// The token, for an `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenText(<redacted>)")
    }
}

/// Reads the token from `file` or, when no file is set, from `env_token` (the value of
/// `SLUICE_ADMIN_TOKEN`). Surrounding whitespace is trimmed, so a file written by `echo` works.
/// Setting both is refused rather than silently preferring one.
pub fn token_text(
    file: Option<&Path>,
    env_token: Option<String>,
) -> Result<Option<TokenText>, AuthError> {
    let (text, origin) = match (file, env_token) {
        (Some(path), Some(_)) => {
            return Err(AuthError::Ambiguous {
                path: path.to_owned(),
            });
        }
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::ReadFile {
                path: path.to_owned(),
                source,
            })?;
            (text, format!("file {}", path.display()))
        }
        (None, Some(text)) => (text, TOKEN_ENV.to_owned()),
        (None, None) => return Ok(None),
    };
    let token = text.trim();
    let problem = if token.is_empty() {
        Some("empty".to_owned())
    } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
        Some("not printable ASCII (or contains spaces)".to_owned())
    } else if token.len() < MIN_TOKEN_LEN {
        Some(format!("{} characters long", token.len()))
    } else {
        None
    };
    match problem {
        Some(problem) => Err(AuthError::Unusable { origin, problem }),
        None => Ok(Some(TokenText(token.to_owned()))),
    }
}

/// What the admin listener keeps of the token: its SHA-256.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Why a request to a mutating endpoint was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer <token>`.
    Malformed,
    /// A bearer token that is not the configured one.
    Wrong,
}

impl Refusal {
    /// What the caller should do, for the 401 body.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "this endpoint changes what clients receive and needs the admin token: send `Authorization: Bearer <token>` with the token sluice was started with (admin_token_file or SLUICE_ADMIN_TOKEN); `sluice reload`, `sluice rebucket` and `sluice forget-table` take --admin-token-file or SLUICE_ADMIN_TOKEN"
            }
            Refusal::Malformed => {
                "the Authorization header is not `Bearer <token>`: send the admin token as a bearer token"
            }
            Refusal::Wrong => {
                "the bearer token is not the admin token this sluice was started with: check admin_token_file or SLUICE_ADMIN_TOKEN on both sides"
            }
        }
    }

    /// A short label for the log line.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Missing => "no token",
            Refusal::Malformed => "malformed Authorization header",
            Refusal::Wrong => "wrong token",
        }
    }
}

impl AdminToken {
    /// Keeps the digest of `text`.
    pub fn new(text: &TokenText) -> AdminToken {
        AdminToken {
            digest: Sha256::digest(text.expose().as_bytes()).into(),
        }
    }

    /// Checks an `Authorization` header value (absent: `None`).
    pub fn check(&self, header: Option<&[u8]>) -> Result<(), Refusal> {
        let header = header.ok_or(Refusal::Missing)?;
        let presented = bearer(header).ok_or(Refusal::Malformed)?;
        let digest: [u8; 32] = Sha256::digest(presented).into();
        if bool::from(digest.ct_eq(&self.digest)) {
            Ok(())
        } else {
            Err(Refusal::Wrong)
        }
    }
}

/// The credentials of a `Bearer` header value; the scheme is case-insensitive (RFC 7235).
fn bearer(header: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if header.len() <= SCHEME.len() || !header[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = header[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Refuses a listener that anyone on the network could reach and no token protects. A loopback
/// listener without a token stays open to local processes, as it always was.
pub fn check_exposure(addr: SocketAddr, token: Option<&AdminToken>) -> Result<(), AuthError> {
    if token.is_none() && !addr.ip().to_canonical().is_loopback() {
        return Err(AuthError::Exposed { addr });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> AdminToken {
        AdminToken::new(&token_text(None, Some(text.into())).unwrap().unwrap())
    }

    #[test]
    fn the_header_must_carry_exactly_the_token() {
        let t = token("0123456789abcdef");
        assert_eq!(t.check(Some(b"Bearer 0123456789abcdef")), Ok(()));
        assert_eq!(t.check(Some(b"bearer 0123456789abcdef ")), Ok(()));
        assert_eq!(t.check(None), Err(Refusal::Missing));
        assert_eq!(t.check(Some(b"Bearer ")), Err(Refusal::Malformed));
        assert_eq!(
            t.check(Some(b"Basic 0123456789abcdef")),
            Err(Refusal::Malformed)
        );
        assert_eq!(
            t.check(Some(b"Bearer 0123456789abcde")),
            Err(Refusal::Wrong)
        );
        assert_eq!(
            t.check(Some(b"Bearer 0123456789abcdefg")),
            Err(Refusal::Wrong)
        );
    }

    #[test]
    fn unusable_tokens_are_refused_without_echoing_them() {
        for (text, problem) in [
            ("", "empty"),
            ("  \n", "empty"),
            ("short-secret", "12 characters long"),
            (
                "0123456789 abcdef",
                "not printable ASCII (or contains spaces)",
            ),
        ] {
            let err = token_text(None, Some(text.into())).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!(
                    "the admin token from SLUICE_ADMIN_TOKEN is {problem}:"
                )),
                "{err}"
            );
            if !text.trim().is_empty() {
                assert!(!err.contains(text.trim()), "{err}");
            }
        }
    }

    #[test]
    fn a_file_is_trimmed_and_both_sources_at_once_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "0123456789abcdef\n").unwrap();
        let text = token_text(Some(&path), None).unwrap().unwrap();
        assert_eq!(text.expose(), "0123456789abcdef");
        assert_eq!(format!("{text:?}"), "TokenText(<redacted>)");
        let err = token_text(Some(&path), Some("x".repeat(20))).unwrap_err();
        assert!(matches!(err, AuthError::Ambiguous { .. }), "{err}");
        let missing = dir.path().join("absent");
        let err = token_text(Some(&missing), None).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "cannot read the admin token file {}",
                missing.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn only_loopback_listeners_may_go_without_a_token() {
        let t = token("0123456789abcdef");
        for open in ["127.0.0.1:9187", "[::1]:9187", "[::ffff:127.0.0.1]:9187"] {
            assert!(
                check_exposure(open.parse().unwrap(), None).is_ok(),
                "{open}"
            );
        }
        for exposed in ["0.0.0.0:9187", "[::]:9187", "10.1.2.3:9187"] {
            let addr = exposed.parse().unwrap();
            assert!(
                matches!(check_exposure(addr, None), Err(AuthError::Exposed { .. })),
                "{exposed}"
            );
            assert!(check_exposure(addr, Some(&t)).is_ok(), "{exposed}");
        }
    }
}
