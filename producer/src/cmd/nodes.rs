//! `seedq-producer nodes`: the live nodes, from their heartbeats in Redis (a node whose heartbeat
//! expired is gone): backend, GPUs, slots busy, chunks done and failed, script jobs running
//! against the node's limit, heartbeat age, and the learned throughput of the node's GPU model
//! per family.

use std::collections::BTreeMap;

use clap::Args;
use seedq_protocol::{NodeHeartbeat, SlotQuarantine};
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

/// `quarantined: backend_errors since 2026-12-07 04:31:07 UTC (95 s ago), next self-test in
/// 25 s, 1 failed: <detail>`.
fn quarantine_line(q: &SlotQuarantine, now_ms: u64) -> String {
    let next = match q.next_test_at_ms {
        Some(at) => format!(
            ", next self-test in {} s",
            at.saturating_sub(now_ms).div_ceil(1000)
        ),
        None => String::new(),
    };
    format!(
        "quarantined: {} since {} ({} s ago){next}, {} failed self-test(s): {}",
        q.reason,
        utc(q.since_ms),
        now_ms.saturating_sub(q.since_ms) / 1000,
        q.failed_tests,
        q.detail
    )
}

/// `YYYY-MM-DD HH:MM:SS UTC` of ms since the epoch (civil-from-days, no date crate needed).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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
            if let Some(q) = &slot.quarantined {
                println!("    {:<10} {}", slot.slot, quarantine_line(q, now));
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_lines_say_why_since_when_and_what_next() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_796_617_867_000), "2026-12-07 04:31:07 UTC");
        let q = SlotQuarantine {
            reason: seedq_protocol::QuarantineReason::BackendErrors,
            detail: "3 backend errors in a row".into(),
            since_ms: 1_796_617_867_000,
            next_test_at_ms: Some(1_796_617_867_000 + 60_000),
            failed_tests: 0,
        };
        assert_eq!(
            quarantine_line(&q, 1_796_617_867_000 + 35_000),
            "quarantined: backend_errors since 2026-12-07 04:31:07 UTC (35 s ago), next self-test \
             in 25 s, 0 failed self-test(s): 3 backend errors in a row"
        );
    }
}
