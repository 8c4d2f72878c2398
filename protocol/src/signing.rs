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
//! A message names its job, and a node runs what the job's record in Redis says. So the record
//! is sealed too ([`JobKey::seal_job`], over [`crate::Job::sealed_json`], under its own domain):
//! a node with a key runs nothing of a job whose seal is missing or wrong
//! ([`JobKey::verify_job`]). Without that, a job created by a producer without the key would
//! still run once a node's scheduler (which holds the key) published its next window, and a
//! signed job's spec could be edited in Redis by anyone allowed to write it.
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
/// The domain of a job record's seal.
const RECORD_DOMAIN: &[u8] = b"seedq-job-record-v1\n";

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
    /// The job's record in Redis carries no seal.
    #[error(
        "job '{job_id}' was created without the job key (its record in Redis is not sealed) and \
         this node requires signed jobs: enqueue it again, under a new id, with SEEDQ_JOB_KEY set"
    )]
    Unsealed {
        /// The job.
        job_id: String,
    },
    /// The job's record does not match its seal: written or edited without the key.
    #[error(
        "job '{job_id}''s record in Redis does not match its seal under this node's job key \
         (edited in Redis, or sealed with another key): nothing of it runs"
    )]
    BadSeal {
        /// The job.
        job_id: String,
    },
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

    fn mac(&self, domain: &[u8], body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(domain);
        mac.update(body);
        mac
    }

    fn tag(&self, domain: &[u8], body: &[u8]) -> String {
        let tag = self.mac(domain, body).finalize().into_bytes();
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `tag` (hex) is the MAC of `body`, in constant time.
    fn matches(&self, domain: &[u8], body: &[u8], tag: &str) -> bool {
        decode_hex(tag.trim())
            .is_some_and(|bytes| self.mac(domain, body).verify_slice(&bytes).is_ok())
    }

    /// The signature of `body` (the [`SIGNATURE_HEADER`] value).
    pub fn sign(&self, body: &[u8]) -> String {
        self.tag(DOMAIN, body)
    }

    /// Checks `signature` (the header's value, if any) against `body`, in constant time.
    pub fn verify(&self, body: &[u8], signature: Option<&str>) -> Result<(), SigningError> {
        let signature = signature.ok_or(SigningError::Missing)?;
        if self.matches(DOMAIN, body, signature) {
            Ok(())
        } else {
            Err(SigningError::Mismatch)
        }
    }

    /// The seal of `job`'s record (the value of [`crate::Job::seal`]).
    pub fn seal_job(&self, job: &crate::Job) -> String {
        self.tag(RECORD_DOMAIN, job.sealed_json().as_bytes())
    }

    /// Checks `job`'s seal against its record, in constant time.
    pub fn verify_job(&self, job: &crate::Job) -> Result<(), SigningError> {
        let Some(seal) = &job.seal else {
            return Err(SigningError::Unsealed {
                job_id: job.job_id.clone(),
            });
        };
        if self.matches(RECORD_DOMAIN, job.sealed_json().as_bytes(), seal) {
            Ok(())
        } else {
            Err(SigningError::BadSeal {
                job_id: job.job_id.clone(),
            })
        }
    }
}

/// Checks `job`'s seal when there is a key ([`JobKey::verify_job`]); without one, every record
/// passes. Producers and nodes hold the key as an `Option` (the key is optional cluster-wide),
/// and a process without it checks nothing, because it could not seal anything either.
pub fn verify_job_with(key: Option<&JobKey>, job: &crate::Job) -> Result<(), SigningError> {
    key.map_or(Ok(()), |key| key.verify_job(job))
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

    /// A sieve, a correlation (free-form JSON with floats and nested objects), a listed-seed
    /// job and a script batch with env and args: each sealed, stored as JSON and read back.
    fn stored_jobs() -> Vec<crate::Job> {
        use crate::{Job, JobSeeds, JobSpec, ScriptBatch};
        use seedq_core::{Family, FamilyConfig, Threshold};
        let sieve = seedq_core::SieveSpec {
            family: FamilyConfig::new(Family::Mt19937),
            draws: vec![1, 2, 3, 4],
            modulus: 1000,
            offset: 0,
            offset_max: Some(40),
            skip_min: 0,
            skip_max: 3,
            threshold: Threshold::parse("0.01").unwrap(),
            reverse_threshold: None,
            direction: Default::default(),
            skip_mode: Default::default(),
        };
        let correlation = serde_json::json!({
            "family": {"family": "xorshift32", "params": {"a": 13}},
            "draws": [3, 1, 4, 1, 5], "modulus": 49, "min_score": 0.1 + 0.2, "tail": 1e-300,
        });
        let task: crate::ScriptJob = serde_json::from_value(serde_json::json!({
            "task_id": "t1", "script": "train.py", "args": ["--lr", "0.001", "ü"],
            "env": {"OMP_NUM_THREADS": "4"}, "timeout_secs": 60, "node": "zeus",
        }))
        .unwrap();
        let mut jobs = vec![
            Job::new_seed_job(
                "s",
                JobSpec::Sieve(sieve.clone()),
                JobSeeds::Range {
                    start: 0,
                    end: 1 << 32,
                },
                1 << 20,
            )
            .unwrap(),
            Job::new_seed_job(
                "c",
                JobSpec::Correlation(correlation),
                JobSeeds::Range { start: 5, end: 500 },
                100,
            )
            .unwrap(),
            Job::new_seed_job(
                "l",
                JobSpec::Sieve(sieve),
                JobSeeds::List(vec![9, 3, u32::MAX as u64]),
                2,
            )
            .unwrap(),
            Job::new_script_batch(
                "b",
                ScriptBatch {
                    tasks: vec![task],
                    output_dir: Some("/data/out".into()),
                    preserve_paths: true,
                },
            )
            .unwrap(),
        ];
        jobs[1].count_only = true;
        jobs[0].label = Some("sieve --prng mt19937".into());
        jobs
    }

    #[test]
    fn a_sealed_record_verifies_after_a_trip_through_redis_and_not_once_edited() {
        let key = JobKey::new("0123456789abcdef0123", "test").unwrap();
        let other = JobKey::new("fedcba9876543210fedc", "test").unwrap();
        for mut job in stored_jobs() {
            let id = job.job_id.clone();
            assert_eq!(
                key.verify_job(&job),
                Err(SigningError::Unsealed { job_id: id.clone() })
            );
            job.seal = Some(key.seal_job(&job));
            let stored = crate::Job::from_json(&job.to_json()).unwrap();
            assert_eq!(key.verify_job(&stored), Ok(()), "{}", job.to_json());
            let bad = Err(SigningError::BadSeal { job_id: id.clone() });
            assert_eq!(other.verify_job(&stored), bad);
            // The label and creation time are not sealed: status text, not work.
            let mut relabelled = stored.clone();
            relabelled.label = Some("anything".into());
            relabelled.created_at_ms += 1;
            assert_eq!(key.verify_job(&relabelled), Ok(()));
            // What runs, where it runs and which life of the id it is are.
            let mut edits: Vec<crate::Job> = Vec::new();
            let mut e = stored.clone();
            e.epoch += 1;
            edits.push(e);
            let mut e = stored.clone();
            e.chunk_count += 1;
            edits.push(e);
            let mut e = stored.clone();
            e.count_only = !e.count_only;
            edits.push(e);
            let text = stored.to_json();
            for (from, to) in [("train.py", "evil.py"), ("zeus", "rig1"), ("1000", "1001")] {
                if text.contains(from) {
                    edits.push(crate::Job::from_json(&text.replacen(from, to, 1)).unwrap());
                }
            }
            for edited in edits {
                assert_eq!(key.verify_job(&edited), bad, "{}", edited.to_json());
            }
        }
    }

    #[test]
    fn without_a_key_every_record_passes_and_with_one_the_seal_decides() {
        let key = JobKey::new("0123456789abcdef0123", "test").unwrap();
        for mut job in stored_jobs() {
            let id = job.job_id.clone();
            assert_eq!(verify_job_with(None, &job), Ok(()));
            assert_eq!(
                verify_job_with(Some(&key), &job),
                Err(SigningError::Unsealed { job_id: id })
            );
            job.seal = Some(key.seal_job(&job));
            assert_eq!(verify_job_with(Some(&key), &job), Ok(()));
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
