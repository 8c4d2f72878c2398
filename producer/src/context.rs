//! What every producer command runs with: the namespace, the service URLs, the cluster model
//! and the output mode, built once in `main` from the global flags; and the connections to Redis
//! and RabbitMQ made from them, so every command connects (and names the service it could not
//! reach, without its password) the same way.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use seedq_broker::{Broker, Endpoints};
use seedq_protocol::{ClusterConfig, Topology};
use seedq_store::Store;

/// The resolved global options.
#[derive(Debug, Clone)]
pub struct Env {
    /// Prefix of every queue and Redis key (`--namespace`, env `SEEDQ_NAMESPACE`, default `seedq`).
    pub namespace: String,
    /// The broker's addresses (`--amqp-url`: one URL, or a cluster's nodes).
    pub endpoints: Endpoints,
    pub redis_url: String,
    /// `--tls-ca-file`: what `rediss://` trusts (the broker's copy lives in `endpoints`).
    pub tls_ca: Option<seedq_protocol::CaCert>,
    /// `--config`, else `config/cluster.toml` when present, else one-machine defaults.
    pub cluster: ClusterConfig,
    /// Where the cluster model came from (for messages); `None` for the built-in defaults.
    pub config_path: Option<PathBuf>,
    /// `--json`: machine-readable stdout.
    pub json: bool,
}

impl Env {
    /// Loads the cluster model: an explicit `--config` must exist; without one,
    /// `config/cluster.toml` is used when present, else the built-in one-machine defaults.
    pub fn load_cluster(
        explicit: Option<&Path>,
    ) -> anyhow::Result<(ClusterConfig, Option<PathBuf>)> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let default = PathBuf::from("config/cluster.toml");
                default.is_file().then_some(default)
            }
        };
        match path {
            Some(p) => {
                let cluster = ClusterConfig::load(&p)
                    .with_context(|| format!("loading cluster config {}", p.display()))?;
                Ok((cluster, Some(p)))
            }
            None => Ok((ClusterConfig::default(), None)),
        }
    }

    /// Seals a new job's record with the job key, when there is one (`seedq_protocol::signing`):
    /// nodes with the key run nothing of an unsealed job.
    pub fn seal(&self, job: &mut seedq_protocol::Job) {
        job.seal = self.endpoints.job_key().map(|key| key.seal_job(job));
    }

    /// Refuses to go on with a stored job that nodes with this producer's key would refuse
    /// (created without the key, under another key, or edited in Redis): publishing its work
    /// would only fill the dead-letter queue.
    pub fn check_sealed(&self, job: &seedq_protocol::Job) -> anyhow::Result<()> {
        Ok(seedq_protocol::signing::verify_job_with(
            self.endpoints.job_key(),
            job,
        )?)
    }

    /// Refuses, before anything is created or published, to enqueue or republish work without
    /// a job key while a live node requires signed jobs: every message would be refused
    /// (`bad_signature`), and this producer's scheduler would publish the next windows of
    /// other, sealed jobs unsigned, so that they too would be refused.
    pub async fn check_unsigned_allowed(&self, store: &Store) -> anyhow::Result<()> {
        if self.endpoints.job_key().is_some() {
            return Ok(());
        }
        let keyed = store.nodes_requiring_signed_jobs(None).await?;
        if !keyed.is_empty() {
            anyhow::bail!(
                "node(s) {} run only signed jobs and this producer has no job key: set \
                 SEEDQ_JOB_KEY or SEEDQ_JOB_KEY_FILE to the cluster's key (nothing was enqueued)",
                keyed.join(", ")
            );
        }
        Ok(())
    }

    /// The broker URLs without their passwords, for messages.
    pub fn amqp_url_redacted(&self) -> String {
        self.endpoints.redacted()
    }

    pub fn redis_url_redacted(&self) -> String {
        redact(&self.redis_url)
    }

    /// The job store of the namespace. Commands that create jobs add the configured expiry
    /// (`with_job_ttl`); readers need none.
    pub async fn store(&self) -> anyhow::Result<Store> {
        Store::connect_with_ca(&self.redis_url, &self.namespace, self.tls_ca.as_ref())
            .await
            .with_context(|| format!("connecting to Redis at {}", self.redis_url_redacted()))
    }

    /// A broker connection named `seedq-producer@<host>`, so operators can tell producers apart
    /// from consumers in the management UI. Declares nothing: publishers declare the topology.
    /// Tries the addresses in order from the last good one, passes repeated with backoff for up
    /// to [`BROKER_GIVE_UP`] (a broker restarting, a cluster node going away).
    pub async fn broker(&self) -> anyhow::Result<Broker> {
        Broker::connect_with_retry(
            &self.endpoints,
            &self.connection_name(),
            &self.namespace,
            BROKER_GIVE_UP,
        )
        .await
        .with_context(|| format!("connecting to RabbitMQ at {}", self.amqp_url_redacted()))
    }

    /// [`Env::broker`] for views that do without the broker when it is down (`top`): one pass
    /// over the addresses, no waiting.
    pub async fn broker_now(&self) -> anyhow::Result<Broker> {
        Broker::connect_any(&self.endpoints, &self.connection_name(), &self.namespace)
            .await
            .with_context(|| format!("connecting to RabbitMQ at {}", self.amqp_url_redacted()))
    }

    /// A Redis client for the commands' own short connections, with the store's TLS trust.
    pub fn redis_client(&self) -> anyhow::Result<redis::Client> {
        seedq_store::client(&self.redis_url, self.tls_ca.as_ref())
            .with_context(|| format!("Redis at {}", self.redis_url_redacted()))
    }

    fn connection_name(&self) -> String {
        Topology::producer_connection_name(&seedq_protocol::hostname())
    }
}

/// How long [`Env::broker`] keeps trying while no address takes a connection: long enough for a
/// broker node to restart, short enough that a command run against no broker at all says so.
pub const BROKER_GIVE_UP: Duration = Duration::from_secs(60);

pub use seedq_telemetry::{redact, redact_args};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(redact("redis://:pw@h:1/"), "redis://:***@h:1/");
    }
}
