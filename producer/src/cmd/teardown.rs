//! `seedq-producer teardown --yes`: removes a namespace entirely (its queues, exchanges and
//! Redis keys). For tests, the demo and soak runs, which each work in a namespace of their own;
//! refused for the default namespace unless `--force`.

use anyhow::Context;
use clap::Args;
use redis::AsyncCommands;
use seedq_protocol::keys;

use crate::context::Env;

#[derive(Debug, Clone, Args)]
pub struct TeardownArgs {
    /// Required: this deletes every job, result and queued message of the namespace.
    #[arg(long)]
    pub yes: bool,
    /// Allow tearing down the default `seedq` namespace.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(env: &Env, args: TeardownArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        args.yes,
        "teardown deletes every job, result and queued message of namespace '{}': add --yes",
        env.namespace
    );
    anyhow::ensure!(
        env.namespace != seedq_protocol::DEFAULT_NAMESPACE || args.force,
        "refusing to tear down the default namespace '{}' without --force",
        env.namespace
    );
    // Node names whose pinned script queues may exist: configured, plus every node seen.
    let client = redis::Client::open(env.redis_url.as_str())?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {}", env.redis_url_redacted()))?;
    let mut nodes: Vec<String> = redis.zrange(keys::nodes(&env.namespace), 0, -1).await?;
    nodes.extend(env.cluster.nodes.iter().map(|n| n.name.clone()));
    nodes.sort();
    nodes.dedup();

    let broker = seedq_broker::Broker::connect_any(
        &env.endpoints,
        "seedq-producer-teardown",
        &env.namespace,
    )
    .await
    .with_context(|| format!("connecting to RabbitMQ at {}", env.amqp_url_redacted()))?;
    let names: Vec<&str> = nodes.iter().map(String::as_str).collect();
    broker
        .purge_namespace(&names)
        .await
        .context("deleting the namespace's queues")?;
    // Nodes that shut down cleanly left the node index, but their pinned script queues stay:
    // ask the management API (when it is there) for whatever else carries the prefix.
    let prefix = format!("{}.", env.namespace);
    let leftovers: Vec<String> = management_queue_names()
        .unwrap_or_default()
        .into_iter()
        .filter(|q| q.starts_with(&prefix))
        .collect();
    if !leftovers.is_empty() {
        let ch = broker.channel().await?;
        for q in &leftovers {
            ch.queue_delete(q.as_str().into(), Default::default())
                .await
                .with_context(|| format!("deleting queue {q}"))?;
        }
    }
    broker.close().await;

    let store = env.store().await?;
    let keys_deleted = store.purge_namespace().await?;
    if env.json {
        println!(
            "{}",
            serde_json::json!({"namespace": env.namespace, "keys": keys_deleted})
        );
    } else {
        eprintln!(
            "namespace {}: removed its queues and {keys_deleted} Redis key(s)",
            env.namespace
        );
    }
    Ok(0)
}

/// Queue names from the RabbitMQ management API (`SEEDQ_MGMT_URL`, default
/// `http://127.0.0.1:15672`, guest/guest unless the URL carries credentials). Best effort: `None`
/// when the API is not reachable.
fn management_queue_names() -> Option<Vec<String>> {
    use base64::Engine as _;
    use std::io::{Read, Write};
    let url = std::env::var("SEEDQ_MGMT_URL")
        .unwrap_or_else(|_| "http://guest:guest@127.0.0.1:15672".into());
    let rest = url.strip_prefix("http://")?.trim_end_matches('/');
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (a.to_string(), h.to_string()),
        None => ("guest:guest".to_string(), rest.to_string()),
    };
    let mut stream = std::net::TcpStream::connect(&hostport).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    let auth = base64::engine::general_purpose::STANDARD.encode(auth);
    write!(stream, "GET /api/queues/%2F?columns=name HTTP/1.0\r\nHost: {hostport}\r\nAuthorization: Basic {auth}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return None;
    }
    let queues: Vec<serde_json::Value> = serde_json::from_str(body).ok()?;
    Some(
        queues
            .iter()
            .filter_map(|q| q["name"].as_str().map(str::to_string))
            .collect(),
    )
}
