//! `seedq-producer teardown --yes`: removes a namespace entirely (its queues, exchanges and
//! Redis keys). For tests, the demo and soak runs, which each work in a namespace of their own;
//! refused for the default namespace unless `--force`.
//!
//! Only the namespace's own names go: its fixed queues and exchanges, and the queues pinned to its
//! nodes, never a queue of another namespace whose name happens to start the same (`a.b.seeds` is
//! not `a`'s; see [`owner_in_use`] for the names two namespaces can share). Redis keys go by the
//! namespace's exact key prefix (`<ns>:`).

use std::collections::HashSet;

use anyhow::Context;
use clap::Args;
use redis::AsyncCommands;
use seedq_protocol::keys;
use seedq_protocol::topology::{namespaces_naming, Topology};

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
    let topology = Topology::new(&env.namespace);
    // Node names whose pinned script queues may exist: configured, every node seen, and (nodes
    // that shut down cleanly left the node index, but their queues stay) whatever the
    // management API lists under the namespace's pinned-queue name, when it is there.
    let client = env.redis_client()?;
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connecting to Redis at {}", env.redis_url_redacted()))?;
    let mut nodes: Vec<String> = redis.zrange(keys::nodes(&env.namespace), 0, -1).await?;
    nodes.extend(env.cluster.nodes.iter().map(|n| n.name.clone()));
    let listed: Option<HashSet<String>> =
        management_queue_names().map(|names| names.into_iter().collect());
    if let Some(listed) = &listed {
        nodes.extend(
            listed
                .iter()
                .filter_map(|q| topology.node_of_scripts_queue(q))
                .map(str::to_string),
        );
    }
    nodes.sort();
    nodes.dedup();
    let mut ours: Vec<&str> = Vec::new();
    let mut kept: Vec<(String, String)> = Vec::new();
    for node in &nodes {
        let queue = topology.node_scripts_queue(node);
        match owner_in_use(&mut redis, &env.namespace, &queue, listed.as_ref()).await? {
            Some(other) => kept.push((queue, other)),
            None => ours.push(node),
        }
    }

    let broker = seedq_broker::Broker::connect_any(
        &env.endpoints,
        "seedq-producer-teardown",
        &env.namespace,
    )
    .await
    .with_context(|| format!("connecting to RabbitMQ at {}", env.amqp_url_redacted()))?;
    broker
        .purge_namespace(&ours)
        .await
        .context("deleting the namespace's queues")?;
    broker.close().await;
    for (queue, other) in &kept {
        eprintln!(
            "kept queue {queue}: namespace {other} is in use and the name is also one of its queues; \
             if it is {}'s, delete it by hand once {other} no longer needs it",
            env.namespace
        );
    }

    let store = env.store().await?;
    let keys_deleted = store.purge_namespace().await?;
    if env.json {
        println!(
            "{}",
            serde_json::json!({
                "namespace": env.namespace,
                "keys": keys_deleted,
                "kept_queues": kept.iter().map(|(q, _)| q).collect::<Vec<_>>(),
            })
        );
    } else {
        eprintln!(
            "namespace {}: removed its queues and {keys_deleted} Redis key(s)",
            env.namespace
        );
    }
    Ok(0)
}

/// Another namespace that `queue` (a pinned script queue name of `namespace`) is also a queue
/// name of, and that is in use, if any: then the queue is not deleted.
///
/// Dots are legal in namespaces and node names, so `a.scripts.seeds` is both node `seeds`'s queue
/// of `a` and the seeds queue of namespace `a.scripts` ([`namespaces_naming`]); the name alone
/// cannot tell. A namespace counts as in use when one of its fixed queues other than this one
/// exists (they are declared together, so one of them existing means the namespace was set up,
/// and a pinned queue name of `a` cannot stand in for all of them), or it has jobs, nodes or
/// learned throughput in Redis. Keeping a queue that was `a`'s after all only leaves an empty
/// queue behind; deleting one that was the other namespace's would lose its messages.
async fn owner_in_use(
    redis: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
    queue: &str,
    listed: Option<&HashSet<String>>,
) -> anyhow::Result<Option<String>> {
    for other in namespaces_naming(queue) {
        if other == namespace {
            continue;
        }
        let has_queues = listed.is_some_and(|listed| {
            Topology::new(&other)
                .fixed_queues()
                .iter()
                .any(|q| q != queue && listed.contains(q))
        });
        let has_keys: u64 = if has_queues {
            0
        } else {
            redis
                .exists(&[
                    keys::jobs(&other),
                    keys::nodes(&other),
                    keys::throughput_hash(&other),
                ])
                .await
                .with_context(|| format!("looking for namespace {other} in Redis"))?
        };
        if has_queues || has_keys > 0 {
            return Ok(Some(other));
        }
    }
    Ok(None)
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
