//! The one TLS setting both clients share: the CA file (`--tls-ca-file`, env
//! `SEEDQ_TLS_CA_FILE`) that the broker connection (`amqps://`) and the Redis connection
//! (`rediss://`) trust, for a lab whose servers carry certificates of a private CA.
//!
//! TLS itself is chosen by the URL's scheme, not by this file: `amqps://` and `rediss://` speak
//! TLS, `amqp://` and `redis://` do not. Without a CA file a TLS connection trusts the system's
//! roots (`/etc/ssl/certs`); with one, Redis trusts that file only and RabbitMQ that file on top
//! of the system's roots (the two client libraries build their trust stores differently).
//!
//! The file is read once, at start, and checked to hold at least one PEM certificate, so that a
//! wrong path or a key file given by mistake is refused with its name before any connection is
//! tried, rather than surfacing later as a certificate error that points nowhere.

use std::fmt;
use std::path::Path;

/// The environment variable of `--tls-ca-file`.
pub const CA_FILE_ENV: &str = "SEEDQ_TLS_CA_FILE";

/// The line every PEM certificate starts with.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

/// A CA file's certificates (PEM), read and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct CaCert {
    path: String,
    pem: String,
}

/// A `--tls-ca-file` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file cannot be read.
    // The reason comes as the error's source (an error chain prints it after this text once).
    #[error("--tls-ca-file ({CA_FILE_ENV}) names {path}, which cannot be read (check the path and that this user may read it)")]
    Unreadable {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM certificate.
    #[error("--tls-ca-file ({CA_FILE_ENV}) names {path}, which holds no PEM certificate (no '{PEM_CERTIFICATE}' line): give the CA certificate that signed the servers' certificates, in PEM (e.g. secrets/tls/ca.pem of scripts/init-secrets.sh), not a key or a DER file")]
    NotPem {
        /// The file.
        path: String,
    },
}

impl CaCert {
    /// Reads `path` and checks that it holds at least one PEM certificate.
    pub fn load(path: &Path) -> Result<CaCert, CaFileError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| CaFileError::Unreadable {
            path: shown.clone(),
            source,
        })?;
        // A DER file or a binary is not UTF-8, and is not what the clients parse either.
        let pem = String::from_utf8(bytes).map_err(|_| CaFileError::NotPem {
            path: shown.clone(),
        })?;
        if !pem.contains(PEM_CERTIFICATE) {
            return Err(CaFileError::NotPem { path: shown });
        }
        Ok(CaCert { path: shown, pem })
    }

    /// `--tls-ca-file` if given: `None` stays `None`, a path is loaded.
    pub fn load_optional(path: Option<&Path>) -> Result<Option<CaCert>, CaFileError> {
        path.map(CaCert::load).transpose()
    }

    /// The certificates, PEM.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The file they came from (for messages).
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Debug for CaCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The path says which CA; the PEM is long and says nothing more to a reader of a log.
        f.debug_struct("CaCert").field("path", &self.path).finish()
    }
}

/// Whether a URL asks for TLS: `amqps://`, `rediss://` (any `...s://` of the two clients).
pub fn is_tls_url(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        let scheme = scheme.to_ascii_lowercase();
        scheme == "amqps" || scheme == "rediss"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, content: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("seedq-protocol-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_pem_certificate_loads_and_anything_else_is_refused_by_name() {
        let good = temp_file(
            "ca.pem",
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        );
        let ca = CaCert::load(&good).unwrap();
        assert!(ca.pem().contains("BEGIN CERTIFICATE"));
        assert!(format!("{ca:?}").contains("ca.pem"));

        let key = temp_file(
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        );
        let err = CaCert::load(&key).unwrap_err().to_string();
        assert!(
            err.contains("key.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        // The key itself is never quoted.
        assert!(!err.contains("MIIE"), "{err}");

        let der = temp_file("ca.der", &[0x30, 0x82, 0xff, 0xfe]);
        assert!(matches!(
            CaCert::load(&der),
            Err(CaFileError::NotPem { .. })
        ));

        let missing = std::env::temp_dir().join("seedq-no-such-ca.pem");
        let err = CaCert::load(&missing).unwrap_err().to_string();
        assert!(
            err.contains("seedq-no-such-ca.pem") && err.contains("cannot be read"),
            "{err}"
        );
        assert!(CaCert::load_optional(None).unwrap().is_none());
        for f in [good, key, der] {
            let _ = std::fs::remove_file(f);
        }
    }

    #[test]
    fn tls_is_the_schemes_choice() {
        assert!(is_tls_url("amqps://u:p@h:5671/%2f"));
        assert!(is_tls_url("rediss://h:6380/"));
        assert!(is_tls_url("REDISS://h/"));
        assert!(!is_tls_url("amqp://h/"));
        assert!(!is_tls_url("redis://h/"));
        assert!(!is_tls_url("h:6379"));
    }
}
