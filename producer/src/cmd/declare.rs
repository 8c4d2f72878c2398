//! `seedq-producer declare [--node NODE ...]`: declares the namespace's queues and exchanges, and
//! the pinned script queues of the cluster model's nodes (and of every `--node`), then exits.
//!
//! With the least-privilege broker users (README, "Security") neither producers nor consumers may
//! declare the shared topology: an administrator runs this once per namespace (the deployment's
//! init step does), with a user allowed to configure the namespace's names. Unlike the declares
//! other commands make on the way, a refusal here is an error: nothing else would declare.

use anyhow::Context;
use clap::Args;

use crate::context::Env;

#[derive(Debug, Clone, Args)]
pub struct DeclareArgs {
    /// Also declare the pinned script queue of this node (repeatable); the nodes of the cluster
    /// model get theirs anyway.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
}

pub async fn run(env: &Env, args: DeclareArgs) -> anyhow::Result<i32> {
    let broker = env.broker().await?;
    broker
        .declare_topology(&env.cluster.broker)
        .await
        .with_context(|| {
            format!(
                "declaring the queues of namespace '{}' (this needs a broker user allowed to \
                 configure them, e.g. the deployment's admin user)",
                env.namespace
            )
        })?;
    let mut nodes: Vec<String> = env.cluster.nodes.iter().map(|n| n.name.clone()).collect();
    nodes.extend(args.nodes);
    nodes.sort();
    nodes.dedup();
    for node in &nodes {
        seedq_protocol::validate_identifier("node name", node)?;
        broker
            .declare_node_scripts_queue(node, &env.cluster.broker)
            .await
            .with_context(|| format!("declaring the pinned script queue of node {node}"))?;
    }
    broker.close().await;
    eprintln!(
        "declared the queues of namespace '{}' and the pinned queues of {} node(s)",
        env.namespace,
        nodes.len()
    );
    Ok(0)
}
