//! `seedq-producer nodes`: the live nodes, from their heartbeats in Redis (a node whose heartbeat
//! expired is gone): backend, GPUs, slots busy, chunks done and failed, script jobs running
//! against the node's limit, heartbeat age, and the learned throughput of the node's GPU model
//! per family.

use std::collections::BTreeMap;

use clap::Args;
use seedq_protocol::NodeHeartbeat;
use serde::Serialize;

use crate::context::Env;

#[derive(Debug, Clone, Args)]
pub struct NodesArgs {}

#[derive(Debug, Serialize)]
struct NodeView {
    #[serde(flatten)]
    heartbeat: NodeHeartbeat,
    heartbeat_age_secs: f64,
    /// Learned throughput of the node's GPU model, family -> units per second.
    throughput: BTreeMap<String, f64>,
}

pub async fn run(env: &Env, _args: NodesArgs) -> anyhow::Result<i32> {
    let store = env.store().await?;
    let nodes = store.list_nodes().await?;
    let rates = store.all_throughput().await?;
    let now = seedq_protocol::now_ms();
    let views: Vec<NodeView> = nodes
        .into_iter()
        .map(|hb| {
            let throughput = rates
                .iter()
                .filter(|(model, _, _)| *model == hb.gpu_model)
                .map(|(_, family, rate)| (family.clone(), *rate))
                .collect();
            NodeView {
                heartbeat_age_secs: now.saturating_sub(hb.at_ms) as f64 / 1000.0,
                heartbeat: hb,
                throughput,
            }
        })
        .collect();
    if env.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "nodes": views }))?
        );
        return Ok(0);
    }
    if views.is_empty() {
        eprintln!(
            "no live nodes in namespace '{}' (start seedq-consumer on the rigs)",
            env.namespace
        );
        return Ok(0);
    }
    println!(
        "{:<16} {:<8} {:>4} {:>10} {:>12} {:>7} {:>8} {:>6}  LEARNED THROUGHPUT (units/s)",
        "NODE", "BACKEND", "GPUS", "SLOTS BUSY", "CHUNKS DONE", "FAILED", "SCRIPTS", "AGE"
    );
    for v in &views {
        let hb = &v.heartbeat;
        let rates = if v.throughput.is_empty() {
            "-".to_string()
        } else {
            v.throughput
                .iter()
                .map(|(family, rate)| format!("{family}={rate:.3e}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{:<16} {:<8} {:>4} {:>10} {:>12} {:>7} {:>8} {:>5.0}s  {}",
            hb.node,
            hb.backend,
            hb.gpus.len(),
            format!("{}/{}", hb.busy_slots, hb.slots.len()),
            hb.chunks_done,
            hb.chunks_failed,
            format!("{}/{}", hb.scripts_running, hb.script_limit),
            v.heartbeat_age_secs,
            rates
        );
        for slot in &hb.slots {
            if let Some(busy) = &slot.busy_with {
                println!("    {:<10} {} busy with {busy}", slot.slot, slot.backend);
            }
        }
    }
    Ok(0)
}
