//! Signed jobs: with a shared key configured (`SEEDQ_JOB_KEY` or `SEEDQ_JOB_KEY_FILE`), every
//! message seedq publishes carries an HMAC-SHA256 of its body in the [`SIGNATURE_HEADER`]
//! header, and a consumer refuses (dead letter, [`crate::FailureReason::BadSignature`], nothing
//! run) a message whose signature is missing or wrong. A broker user who may publish to the work
//! queues but does not hold the key cannot make a node run anything.
//!
//! What is signed: the message body, byte for byte, after a fixed domain prefix. The body holds
//! the job id, the job's epoch ([`crate::Job::epoch`]), the chunk or task and its attempt, so a
//! signature binds all of them: a signed message cannot be edited, and one signed for an earlier
//! life of a job id is refused as stale by the epoch check like any other. Headers are not signed:
//! they are descriptive only (see the crate doc's wire rules).
//!
//! The key is symmetric: consumers hold it too, because they republish (retries with the attempt
//! bumped, hand-backs, parked results), and each republish is signed again.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The message header carrying the signature (lowercase hex of the HMAC).
pub const SIGNATURE_HEADER: &str = "x-seedq-signature";

/// The key variable (the key itself) and the file variable (a path to a file holding it, as
/// docker secrets are mounted).
pub const KEY_ENV: &str = "SEEDQ_JOB_KEY";
/// See [`KEY_ENV`].
pub const KEY_FILE_ENV: &str = "SEEDQ_JOB_KEY_FILE";

/// Shortest key accepted, bytes: a shorter one could be guessed.
pub const MIN_KEY_LEN: usize = 16;

/// Separates this MAC's input from any other use of the same key.
const DOMAIN: &[u8] = b"seedq-job-v1\n";

type HmacSha256 = Hmac<Sha256>;

/// The shared job key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct JobKey(std::sync::Arc<[u8]>);

impl std::fmt::Debug for JobKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobKey(***)")
    }
}

/// Why a key could not be used, or a message's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The key is too short (the key itself is never shown).
    #[error(
        "{source_name} holds {len} bytes; a job key needs at least {MIN_KEY_LEN} \
         (generate one with `openssl rand -hex 32`)"
    )]
    KeyTooShort {
        /// `SEEDQ_JOB_KEY` or the file it came from.
        source_name: String,
        /// Its length.
        len: usize,
    },
    /// The message has no signature header.
    #[error("the message is not signed (no {SIGNATURE_HEADER} header) and this node requires signed jobs")]
    Missing,
    /// The signature does not match the body under this node's key.
    #[error("the message's {SIGNATURE_HEADER} does not match its body under this node's job key")]
    Mismatch,
}

impl JobKey {
    /// A key from its text (surrounding whitespace, e.g. a file's final newline, is dropped).
    /// `source_name` names where it came from, for the error.
    pub fn new(text: &str, source_name: &str) -> Result<JobKey, SigningError> {
        let key = text.trim();
        if key.len() < MIN_KEY_LEN {
            return Err(SigningError::KeyTooShort {
                source_name: source_name.to_string(),
                len: key.len(),
            });
        }
        Ok(JobKey(key.as_bytes().into()))
    }

    fn mac(&self, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(body);
        mac
    }

    /// The signature of `body` (the [`SIGNATURE_HEADER`] value).
    pub fn sign(&self, body: &[u8]) -> String {
        let tag = self.mac(body).finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Checks `signature` (the header's value, if any) against `body`, in constant time.
    pub fn verify(&self, body: &[u8], signature: Option<&str>) -> Result<(), SigningError> {
        let signature = signature.ok_or(SigningError::Missing)?;
        let bytes = decode_hex(signature.trim()).ok_or(SigningError::Mismatch)?;
        self.mac(body)
            .verify_slice(&bytes)
            .map_err(|_| SigningError::Mismatch)
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_the_same_body_and_key() {
        let key = JobKey::new("0123456789abcdef0123", "test").unwrap();
        let other = JobKey::new("fedcba9876543210fedc", "test").unwrap();
        let body = br#"{"v":1,"job_id":"j","epoch":7}"#;
        let sig = key.sign(body);
        assert_eq!(sig.len(), 64);
        assert_eq!(key.verify(body, Some(&sig)), Ok(()));
        assert_eq!(key.verify(body, None), Err(SigningError::Missing));
        assert_eq!(other.verify(body, Some(&sig)), Err(SigningError::Mismatch));
        let edited = br#"{"v":1,"job_id":"j","epoch":8}"#;
        assert_eq!(key.verify(edited, Some(&sig)), Err(SigningError::Mismatch));
        for junk in ["", "zz", "abc", &sig[..62]] {
            assert_eq!(key.verify(body, Some(junk)), Err(SigningError::Mismatch));
        }
    }

    #[test]
    fn short_keys_are_refused_without_being_shown() {
        let err = JobKey::new("  hunter2\n", "SEEDQ_JOB_KEY").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("SEEDQ_JOB_KEY") && text.contains("openssl rand"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let key = JobKey::new("a-long-enough-key-123\n", "file").unwrap();
        assert_eq!(format!("{key:?}"), "JobKey(***)");
        // The file's newline is not part of the key.
        assert_eq!(
            key.sign(b"x"),
            JobKey::new("a-long-enough-key-123", "env")
                .unwrap()
                .sign(b"x")
        );
    }
}
