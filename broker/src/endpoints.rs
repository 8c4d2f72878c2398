//! The addresses of one broker: a single node, or the nodes of a RabbitMQ cluster, any of which
//! serves every queue (quorum queues are replicated; a node that does not lead a queue proxies to
//! its leader). Connections try them in order, starting from the address the last connection
//! succeeded at, so that a process keeps to a node that works and moves on only when it fails.
//!
//! URLs carry credentials: everything here that names one (the `Display` of [`Endpoints`], the
//! errors of [`Broker::connect_any`]) names it with the password redacted, and a client library's
//! own error text is scrubbed of the password before it is kept.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use seedq_protocol::{CaCert, JobKey};
use seedq_telemetry::{redact, Secrets};

use crate::{Broker, BrokerError, Result};

/// How long one address may take to accept a connection: a node that is down refuses at once,
/// but one behind a dead link would otherwise hold the whole pass for the OS's TCP timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker's addresses, shared by every connection a process makes (clones share the memory
/// of the last good address).
#[derive(Clone)]
pub struct Endpoints {
    urls: Arc<[String]>,
    /// Index of the address the last successful connection used.
    last_good: Arc<AtomicUsize>,
    /// Every connection made from these addresses signs its publishes with it
    /// ([`Broker::with_job_key`]).
    job_key: Option<JobKey>,
    /// `--tls-ca-file`: what `amqps://` addresses trust besides the system's roots.
    tls_ca: Option<CaCert>,
}

impl Endpoints {
    /// From `--amqp-url` values: each may itself be a comma-separated list (a comma inside a
    /// password must be percent-encoded, `%2C`). Blank entries are ignored; none left is an error.
    pub fn new<S: AsRef<str>>(urls: impl IntoIterator<Item = S>) -> Result<Endpoints> {
        let urls: Vec<String> = urls
            .into_iter()
            .flat_map(|u| {
                u.as_ref()
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(BrokerError::NoAddress);
        }
        Ok(Endpoints {
            urls: urls.into(),
            last_good: Arc::new(AtomicUsize::new(0)),
            job_key: None,
            tls_ca: None,
        })
    }

    /// `amqps://` connections made from these addresses also trust `ca` (`--tls-ca-file`).
    pub fn with_tls_ca(mut self, ca: Option<CaCert>) -> Endpoints {
        self.tls_ca = ca;
        self
    }

    /// The CA file `amqps://` connections trust, if any.
    pub fn tls_ca(&self) -> Option<&CaCert> {
        self.tls_ca.as_ref()
    }

    /// Connections made from these addresses sign what they publish with `key`.
    pub fn with_job_key(mut self, key: Option<JobKey>) -> Endpoints {
        self.job_key = key;
        self
    }

    /// The key connections sign with, if any.
    pub fn job_key(&self) -> Option<&JobKey> {
        self.job_key.as_ref()
    }

    /// The URLs as given (with their credentials: never log these, see [`Endpoints::redacted`]).
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Every URL with its password replaced by `***`, comma-separated.
    pub fn redacted(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Indexes in the order a connection tries them: the last good address first, then the
    /// ones after it, wrapping around.
    pub fn rotation(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.urls.len();
        let start = self.last_good.load(Ordering::Relaxed) % n;
        (0..n).map(move |i| (start + i) % n)
    }

    fn mark_good(&self, index: usize) {
        self.last_good.store(index, Ordering::Relaxed);
    }
}

impl fmt::Display for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("urls", &self.redacted())
            .field("last_good", &self.last_good.load(Ordering::Relaxed))
            .finish()
    }
}

impl Broker {
    /// One pass over `endpoints` in [`Endpoints::rotation`] order; the first address that takes
    /// the connection (within [`CONNECT_TIMEOUT`]) becomes the last good one. A single address
    /// fails with its own error; several fail with [`BrokerError::Unreachable`] naming each.
    pub async fn connect_any(
        endpoints: &Endpoints,
        connection_name: &str,
        namespace: &str,
    ) -> Result<Broker> {
        let mut failures: Vec<(usize, BrokerError)> = Vec::new();
        for index in endpoints.rotation() {
            let url = &endpoints.urls()[index];
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Broker::connect_with_ca(url, connection_name, namespace, endpoints.tls_ca.as_ref()),
            )
            .await
            .unwrap_or_else(|_| {
                Err(BrokerError::ConnectTimeout {
                    address: redact(url),
                    after: CONNECT_TIMEOUT,
                })
            });
            match attempt {
                Ok(broker) => {
                    let previous = endpoints.last_good.load(Ordering::Relaxed);
                    if !failures.is_empty() || previous != index {
                        tracing::info!(address = %broker.address(), "connected to RabbitMQ at another address of the list");
                    }
                    endpoints.mark_good(index);
                    return Ok(broker.with_job_key(endpoints.job_key.clone()));
                }
                // The namespace is wrong whatever the address.
                Err(e @ BrokerError::Protocol(_)) => return Err(e),
                Err(e) => failures.push((index, e)),
            }
        }
        if failures.len() == 1 {
            return Err(failures.pop().expect("one failure").1);
        }
        let permanent = failures.iter().all(|(_, e)| e.is_permanent());
        let tried = failures
            .iter()
            .map(|(index, e)| {
                let url = &endpoints.urls()[*index];
                // The client's own text could quote the URL: scrub its password before keeping it.
                let text = Secrets::from_urls(&[url.as_str()])
                    .scrub(&e.to_string())
                    .into_owned();
                format!("{}: {text}", redact(url))
            })
            .collect::<Vec<_>>()
            .join("; ");
        Err(BrokerError::Unreachable { tried, permanent })
    }

    /// [`Broker::connect_any`] again and again, with exponential backoff and jitter between
    /// passes, for up to `give_up_after`; an error waiting does not fix
    /// ([`BrokerError::is_permanent`]: a bad namespace, a TLS mismatch, an untrusted
    /// certificate) ends it at once.
    pub async fn connect_with_retry(
        endpoints: &Endpoints,
        connection_name: &str,
        namespace: &str,
        give_up_after: Duration,
    ) -> Result<Broker> {
        (|| Broker::connect_any(endpoints, connection_name, namespace))
            .retry(connect_backoff(Some(give_up_after)))
            .when(|e| !e.is_permanent())
            .notify(
                |e, d| tracing::warn!(error = %e, retry_in = ?d, "cannot reach RabbitMQ; retrying"),
            )
            .await
    }
}

/// Between passes over the addresses: 200 ms doubling to 5 s, jittered so that the consumers
/// of a cluster do not all come back in the same instant after a broker restart; for up to
/// `give_up_after` in all, or endless.
pub fn connect_backoff(give_up_after: Option<Duration>) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_total_delay(give_up_after)
        .without_max_times()
        .with_jitter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_trim_and_refuse_to_be_empty() {
        let e = Endpoints::new(["amqp://a:1/, amqp://b:2/", "amqp://c:3/"]).unwrap();
        assert_eq!(e.urls(), ["amqp://a:1/", "amqp://b:2/", "amqp://c:3/"]);
        assert!(matches!(
            Endpoints::new([" , "]),
            Err(BrokerError::NoAddress)
        ));
        assert!(matches!(
            Endpoints::new(Vec::<String>::new()),
            Err(BrokerError::NoAddress)
        ));
    }

    #[test]
    fn the_rotation_starts_at_the_last_good_address() {
        let e = Endpoints::new(["amqp://a/", "amqp://b/", "amqp://c/"]).unwrap();
        assert_eq!(e.rotation().collect::<Vec<_>>(), [0, 1, 2]);
        e.mark_good(1);
        let shared = e.clone();
        assert_eq!(shared.rotation().collect::<Vec<_>>(), [1, 2, 0]);
        e.mark_good(2);
        assert_eq!(shared.rotation().collect::<Vec<_>>(), [2, 0, 1]);
    }

    #[test]
    fn every_url_of_the_list_is_redacted() {
        let e =
            Endpoints::new(["amqp://seedq:s3cret@r1:5672/%2f,amqp://seedq:other-pw@r2:5672/%2f"])
                .unwrap();
        let shown = format!("{e} {e:?} {}", e.redacted());
        for secret in ["s3cret", "other-pw"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("amqp://seedq:***@r1:5672/%2f,amqp://seedq:***@r2:5672/%2f"));
    }

    #[tokio::test]
    async fn a_pass_over_dead_addresses_names_each_without_its_password() {
        // Ports that refuse at once: bound for a moment, then closed again.
        let dead: Vec<String> = (0..2)
            .map(|_| {
                let port = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .unwrap()
                    .port();
                format!("amqp://seedq:hunter22pw@127.0.0.1:{port}/%2f")
            })
            .collect();
        let e = Endpoints::new(&dead).unwrap();
        let err = match Broker::connect_any(&e, "seedq-test@endpoints", "t-endpoints").await {
            Ok(_) => panic!("nothing listens there"),
            Err(err) => err,
        };
        assert!(matches!(err, BrokerError::Unreachable { .. }), "{err}");
        let text = err.to_string();
        assert!(!text.contains("hunter22pw"), "{text}");
        for url in &dead {
            assert!(text.contains(&redact(url)), "{text}");
        }
        // A bad namespace is not worth trying the other addresses for.
        let err = match Broker::connect_any(&e, "seedq-test@endpoints", "bad ns!").await {
            Ok(_) => panic!("invalid namespace"),
            Err(err) => err,
        };
        assert!(matches!(err, BrokerError::Protocol(_)), "{err}");
    }
}
