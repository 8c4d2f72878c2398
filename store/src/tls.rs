//! Redis clients from a URL and `--tls-ca-file`, and the connection errors that say what to
//! change: `rediss://` speaks TLS (trusting the CA file when given, else the system's roots),
//! `redis://` does not, and a mismatch between the scheme and the port, an untrusted certificate
//! or a Redis that does not answer each get a hint of their own ([`StoreError::Connect`]).
//!
//! Every client seedq makes goes through [`client`], so the producer's short-lived connections
//! (teardown) trust the same CA as the store's.

use std::time::Duration;

use seedq_protocol::tls::is_tls_url;
use seedq_protocol::CaCert;

use crate::StoreError;

/// How long [`crate::Store::connect`] tries (connection, retries, first PING) before it gives
/// up with an error naming the address: long enough for a Redis restart's first seconds, short
/// enough that a command run against a Redis it cannot reach says so instead of hanging.
pub const CONNECT_GIVE_UP: Duration = Duration::from_secs(10);

/// A client for `url`; a `rediss://` URL trusts `ca` (when given) instead of the system's
/// roots. The URL is never quoted in an error.
pub fn client(url: &str, ca: Option<&CaCert>) -> Result<redis::Client, StoreError> {
    match ca {
        Some(ca) if is_tls_url(url) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.pem().as_bytes().to_vec()),
            },
        )
        .map_err(|e| match e.kind() {
            // Only the CA can be at fault here: the URL parsed (`into_connection_info`) first.
            redis::ErrorKind::Io => StoreError::CaFile {
                path: ca.path().to_string(),
                detail: e.to_string(),
            },
            _ => StoreError::Redis(e),
        }),
        // A CA file with a plain URL: the file is for the broker's amqps://, or unused.
        _ => Ok(redis::Client::open(url)?),
    }
}

/// rustls refusing the server's certificate (unknown issuer, wrong name, expired): redis
/// passes it on as an I/O error whose text names the certificate.
pub(crate) fn is_certificate_error(e: &redis::RedisError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    text.contains("certificate") || text.contains("unknownissuer")
}

const HINT_DOWN: &str = "is Redis running and reachable at that address (the --redis-url)?";
const HINT_PLAIN_AT_TLS: &str = "is Redis running there? If that port only speaks TLS, use a rediss:// URL (with --tls-ca-file (SEEDQ_TLS_CA_FILE) for a private CA)";
const HINT_TLS_AT_PLAIN: &str = "is Redis running there, and does that port speak TLS? A plain port needs a redis:// URL; rediss:// goes to Redis' tls-port";
const HINT_CERTIFICATE: &str = "the server's TLS certificate is not trusted: pass the CA certificate that signed it with --tls-ca-file (SEEDQ_TLS_CA_FILE), and check that the URL's host is one the certificate names";

/// The [`StoreError`] of a failed connection to `url`: a connection-level failure becomes
/// [`StoreError::Connect`] with the hint for its shape; a server's refusal (a wrong password,
/// a missing permission) stays [`StoreError::Redis`], whose text already names it.
pub(crate) fn connect_error(url: &str, e: redis::RedisError) -> StoreError {
    let address = seedq_telemetry_free_redact(url);
    let detail = e.to_string();
    if is_tls_url(url) && is_certificate_error(&e) {
        return StoreError::Connect {
            address,
            detail,
            hint: HINT_CERTIFICATE,
            permanent: true,
        };
    }
    let connection_level =
        e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal();
    if !connection_level {
        return StoreError::Redis(e);
    }
    StoreError::Connect {
        address,
        detail,
        hint: hint_for(url, Some(&e)),
        permanent: false,
    }
}

/// Refused: nothing listens there; a TLS mismatch shows as a dropped or silent connection.
fn hint_for(url: &str, e: Option<&redis::RedisError>) -> &'static str {
    match (
        is_tls_url(url),
        e.is_some_and(|e| e.is_connection_refusal()),
    ) {
        (_, true) => HINT_DOWN,
        (true, false) => HINT_TLS_AT_PLAIN,
        (false, false) => HINT_PLAIN_AT_TLS,
    }
}

/// [`CONNECT_GIVE_UP`] passed: `last` is the last connection error seen, if any.
pub(crate) fn no_answer(url: &str, last: Option<redis::RedisError>) -> StoreError {
    let waited = format!("no answer within {CONNECT_GIVE_UP:?}");
    StoreError::Connect {
        address: seedq_telemetry_free_redact(url),
        hint: hint_for(url, last.as_ref()),
        detail: match last {
            Some(last) => format!("{waited} (last error: {last})"),
            None => waited,
        },
        permanent: false,
    }
}

/// `scheme://user:***@host...`: the store does not depend on seedq-telemetry (whose `redact`
/// this mirrors: the LAST `@` ends the user info, a password may hold `@` and `:`), and its
/// errors must not carry a password either.
fn seedq_telemetry_free_redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_string(),
        };
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://{userinfo}@{host}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_errors_carry_no_password() {
        for (url, shown) in [
            (
                "rediss://default:hunter22@h:6380/",
                "rediss://default:***@h:6380/",
            ),
            ("redis://:p@ss:w@h:6379/", "redis://:***@h:6379/"),
            ("rediss://h:6380/", "rediss://h:6380/"),
        ] {
            assert_eq!(seedq_telemetry_free_redact(url), shown);
            let dropped =
                redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
            let text = no_answer(url, Some(dropped)).to_string();
            assert!(text.contains(shown), "{text}");
            assert!(
                !text.contains("hunter22") && !text.contains("p@ss"),
                "{text}"
            );
        }
    }

    #[test]
    fn the_hint_follows_the_scheme_and_the_failure() {
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let text = connect_error("rediss://h:1/", refused).to_string();
        assert!(text.contains("is Redis running"), "{text}");
        let dropped =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        let text = connect_error("redis://h:1/", dropped).to_string();
        assert!(text.contains("rediss://"), "{text}");
        let cert = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        ));
        let err = connect_error("rediss://h:1/", cert);
        assert!(err.to_string().contains("--tls-ca-file"), "{err}");
        assert_eq!(err.class(), crate::ErrorClass::Permanent);
        let text = no_answer("rediss://h:1/", None).to_string();
        assert!(text.contains("redis:// URL"), "{text}");
        // Refused until the end: Redis is down, whatever the scheme.
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let text = no_answer("redis://h:1/", Some(refused)).to_string();
        assert!(text.contains("is Redis running and reachable"), "{text}");
        assert!(!text.contains("rediss://"), "{text}");
    }
}
