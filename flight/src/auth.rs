//! Bearer tokens and roles. A token file holds one `TOKEN ROLE` per line (`#` starts a
//! comment); roles are `read` (queries, listings, stats), `write` (puts and DML) and `admin`
//! (everything: DDL, COPY, drop, index builds, verification).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use base64::Engine;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role '{other}' (expected read, write or admin)"
            )),
        }
    }
}

/// The tokens a server accepts.
#[derive(Clone, Default)]
pub struct Tokens(HashMap<String, Role>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} tokens)", self.0.len())
    }
}

impl Tokens {
    /// Reads a token file, refusing malformed lines with their line number.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("token file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("token file {}: {e}", path.display()))
    }

    pub(crate) fn parse(text: &str) -> Result<Tokens, String> {
        let mut tokens = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(token), Some(role), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: expected 'TOKEN ROLE'", i + 1));
            };
            let role = role
                .parse::<Role>()
                .map_err(|e| format!("line {}: {e}", i + 1))?;
            tokens.insert(token.to_string(), role);
        }
        if tokens.is_empty() {
            return Err("no tokens".into());
        }
        Ok(Tokens(tokens))
    }

    /// The role of the caller whose request carries `metadata`.
    pub(crate) fn caller(&self, metadata: &MetadataMap) -> Result<Role, Status> {
        let token = bearer(metadata)?;
        self.0
            .get(token)
            .copied()
            .ok_or_else(|| Status::unauthenticated("unknown bearer token"))
    }

    /// The handshake: a Basic `user:password` header (the password is a token) or a bearer
    /// token. Returns the token to use as `authorization: Bearer <token>`.
    pub(crate) fn handshake(&self, metadata: &MetadataMap) -> Result<String, Status> {
        let header = authorization(metadata)?;
        let token = if let Some(basic) = header.strip_prefix("Basic ") {
            let decoded = decode_basic(basic.trim())
                .ok_or_else(|| Status::unauthenticated("malformed Basic credentials"))?;
            let (_, password) = decoded.split_once(':').unwrap_or(("", &decoded));
            password.to_string()
        } else {
            bearer(metadata)?.to_string()
        };
        if self.0.contains_key(&token) {
            Ok(token)
        } else {
            Err(Status::unauthenticated("unknown token"))
        }
    }
}

/// Basic credentials are base64 with or without its `=` padding: RFC 7617 pads, but the ADBC
/// Flight SQL driver (Go's `RawStdEncoding`) does not.
fn decode_basic(encoded: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(encoded.trim_end_matches('='))
        .ok()?;
    String::from_utf8(bytes).ok()
}

fn authorization(metadata: &MetadataMap) -> Result<&str, Status> {
    metadata
        .get("authorization")
        .ok_or_else(|| {
            Status::unauthenticated(
                "this server requires a token: send 'authorization: Bearer <token>'",
            )
        })?
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))
}

fn bearer(metadata: &MetadataMap) -> Result<&str, Status> {
    authorization(metadata)?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .ok_or_else(|| Status::unauthenticated("the authorization header must be 'Bearer <token>'"))
}

/// Refuses a caller whose role is below `need`.
pub(crate) fn require(have: Role, need: Role, what: &str) -> Result<(), Status> {
    if have >= need {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{what} needs the '{}' role; this token has '{}'",
            need.as_str(),
            have.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_are_parsed_and_malformed_lines_named() {
        let t = Tokens::parse("# tokens\nabc read\n  xyz admin # ops\n").unwrap();
        assert_eq!(t.0.get("abc"), Some(&Role::Read));
        assert_eq!(t.0.get("xyz"), Some(&Role::Admin));
        assert!(Tokens::parse("abc root\n")
            .unwrap_err()
            .contains("line 1: unknown role 'root'"));
        assert!(Tokens::parse("a\n").unwrap_err().contains("line 1"));
        assert!(Tokens::parse("\n# none\n").is_err());
    }

    #[test]
    fn basic_credentials_decode_with_and_without_padding() {
        use base64::Engine;
        for password in ["t", "to", "tok", "toke", "token"] {
            let plain = format!("me:{password}");
            for engine in [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::STANDARD_NO_PAD,
            ] {
                assert_eq!(
                    decode_basic(&engine.encode(&plain)).as_deref(),
                    Some(&*plain)
                );
            }
        }
        assert_eq!(decode_basic("not base64!"), None);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(require(Role::Admin, Role::Write, "x").is_ok());
        let e = require(Role::Read, Role::Write, "a put").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("'write' role"));
    }
}
