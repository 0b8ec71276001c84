//! Statement handles: what a client holds between Flight SQL calls. A handle is stateless:
//! it carries the session it belongs to, the SQL text, the bound parameters (an Arrow IPC
//! stream of one row) and, for a statement that already ran when it was described (DDL,
//! DML), its result. It is signed with the server's key, so a client cannot forge one, move
//! one to another session, or change what it holds.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tonic::Status;

const VERSION: u8 = 1;
const TAG: usize = 32;

/// The contents of a statement handle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Handle {
    /// The session the statement was prepared in.
    pub session: String,
    /// The statement's SQL text.
    pub sql: String,
    /// Bound parameters: an Arrow IPC stream of one row, or empty.
    pub params: Vec<u8>,
    /// The result of a statement that ran when it was described: an Arrow IPC stream, or
    /// empty.
    pub result: Vec<u8>,
}

/// Signs and checks handles with a key made when the server starts (handles do not outlive
/// the server, as sessions do not).
pub(crate) struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

impl Signer {
    /// A signer with a fresh random key.
    pub(crate) fn new() -> Result<Signer, String> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| format!("no randomness for the handle key: {e}"))?;
        Ok(Signer { key })
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// The signed bytes of `handle`.
    pub(crate) fn encode(&self, handle: &Handle) -> Vec<u8> {
        let mut out = vec![VERSION];
        for part in [
            handle.session.as_bytes(),
            handle.sql.as_bytes(),
            &handle.params,
            &handle.result,
        ] {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
            out.extend_from_slice(part);
        }
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    /// The handle in `bytes`, if this server signed them and they belong to `session`.
    pub(crate) fn decode(&self, bytes: &[u8], session: &str) -> Result<Handle, Status> {
        let bad = || {
            Status::invalid_argument(
                "invalid statement handle: not one this server issued (or the server restarted \
                 since); prepare the statement again",
            )
        };
        if bytes.len() < 1 + TAG || bytes[0] != VERSION {
            return Err(bad());
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(tag).map_err(|_| bad())?;
        let mut rest = &body[1..];
        let mut parts = Vec::with_capacity(4);
        for _ in 0..4 {
            if rest.len() < 8 {
                return Err(bad());
            }
            let (len, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
            if tail.len() < len {
                return Err(bad());
            }
            let (part, tail) = tail.split_at(len);
            parts.push(part.to_vec());
            rest = tail;
        }
        let text = |b: Vec<u8>| String::from_utf8(b).map_err(|_| bad());
        let result = parts.pop().expect("4 parts");
        let params = parts.pop().expect("4 parts");
        let sql = text(parts.pop().expect("4 parts"))?;
        let owner = text(parts.pop().expect("4 parts"))?;
        if owner != session {
            return Err(Status::permission_denied(
                "this statement handle belongs to another session; prepare the statement in \
                 this one",
            ));
        }
        Ok(Handle {
            session: owner,
            sql,
            params,
            result,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_and_refuse_forgery_and_other_sessions() {
        let signer = Signer::new().unwrap();
        let h = Handle {
            session: "s1".into(),
            sql: "SELECT 1".into(),
            params: vec![1, 2, 3],
            result: vec![],
        };
        let bytes = signer.encode(&h);
        assert_eq!(signer.decode(&bytes, "s1").unwrap(), h);
        let other = signer.decode(&bytes, "s2").unwrap_err();
        assert_eq!(other.code(), tonic::Code::PermissionDenied);
        let mut forged = bytes.clone();
        forged[12] ^= 1;
        assert!(signer
            .decode(&forged, "s1")
            .unwrap_err()
            .message()
            .contains("invalid statement handle"));
        let stranger = Signer::new().unwrap();
        assert!(stranger.decode(&bytes, "s1").is_err());
        assert!(signer.decode(&bytes[..10], "s1").is_err());
    }
}
