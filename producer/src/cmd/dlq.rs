//! `seedq-producer dlq list|replay|purge`: the dead letters.
//!
//! `dlq list` shows the dead letters with their reason, job, member, attempt and source queue,
//! without removing them. `dlq replay` puts them back on their original queue (after the cause
//! was fixed) with the attempt count reset, re-opening their jobs in Redis; `dlq purge --yes`
//! drops them. Both take `--job JOB` to touch only one job's dead letters. Listing and filtering
//! read the queue with `basic.get` and return what they do not remove (the DLQ has no delivery
//! limit, so this never loses a message).

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde::Serialize;

use seedq_broker::Headers;
use seedq_protocol::{headers as h, ChunkMessage, FailureReason, ScriptJob, Topology};

use crate::context::Env;

#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub action: DlqAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqAction {
    /// Show the dead letters (they stay in the queue).
    List {
        /// Only this job's dead letters.
        #[arg(long)]
        job: Option<String>,
    },
    /// Put dead letters back on their original queue with the attempt count reset.
    Replay {
        #[arg(long)]
        job: Option<String>,
    },
    /// Delete dead letters.
    Purge {
        #[arg(long)]
        job: Option<String>,
        /// Required: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// One dead letter as `dlq list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetter {
    pub job: Option<String>,
    pub kind: Option<String>,
    /// `c<index>` or `t:<task>` when the body parses.
    pub member: Option<String>,
    pub attempt: Option<String>,
    pub reason: String,
    pub detail: Option<String>,
    pub source_queue: Option<String>,
    pub node: Option<String>,
    pub bytes: usize,
}

/// A dead letter's body, understood.
enum Body {
    Chunk(ChunkMessage),
    Script(ScriptJob),
    Unknown,
}

fn parse_body(data: &[u8]) -> Body {
    if let Ok(chunk) = ChunkMessage::from_json(data) {
        return Body::Chunk(chunk);
    }
    match ScriptJob::from_json(data) {
        Ok(script) => Body::Script(script),
        Err(_) => Body::Unknown,
    }
}

/// Describes a dead letter from its headers and body.
pub fn describe(headers: &Headers, data: &[u8]) -> DeadLetter {
    let body = parse_body(data);
    let (job, member) = match &body {
        Body::Chunk(c) => (Some(c.job_id.clone()), Some(c.member())),
        Body::Script(s) => (Some(s.batch_id.clone()), Some(s.member())),
        Body::Unknown => (headers.get(h::JOB).cloned(), None),
    };
    // Broker-side dead letters (delivery limit) carry x-death / x-first-death-reason instead.
    let reason = headers
        .get(h::ERROR)
        .cloned()
        .or_else(|| {
            headers
                .get("x-first-death-reason")
                .map(|r| format!("broker:{r}"))
        })
        .unwrap_or_else(|| "unknown".into());
    DeadLetter {
        job,
        kind: headers.get(h::KIND).cloned(),
        member,
        attempt: headers.get(h::ATTEMPT).cloned(),
        reason,
        detail: headers.get(h::ERROR_DETAIL).cloned(),
        source_queue: headers
            .get(h::SOURCE_QUEUE)
            .cloned()
            .or_else(|| headers.get("x-first-death-queue").cloned()),
        node: headers.get(h::NODE).cloned(),
        bytes: data.len(),
    }
}

/// Where a replayed dead letter goes, and its body and headers with the attempt reset.
fn replay_target(
    topology: &Topology,
    letter: &DeadLetter,
    headers: &Headers,
    data: &[u8],
) -> Option<(String, Vec<u8>, Headers)> {
    let mut headers: Headers = headers
        .iter()
        .filter(|(k, _)| {
            !k.starts_with("x-death")
                && !k.starts_with("x-first-death")
                && !k.starts_with("x-last-death")
        })
        .filter(|(k, _)| ![h::ERROR, h::ERROR_DETAIL, h::SOURCE_QUEUE].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers.insert(h::ATTEMPT.to_string(), "1".to_string());
    // A message of an earlier life of its job id would only be refused again.
    if letter.reason == FailureReason::StaleMessage.as_str() {
        return None;
    }
    // A replay is signed with this producer's key: replaying a message that came without a
    // valid signature would vouch for whoever published it. It stays in the dead-letter queue.
    if letter.reason == FailureReason::BadSignature.as_str() {
        return None;
    }
    match parse_body(data) {
        Body::Chunk(mut chunk) => {
            chunk.attempt = 1;
            let queue = letter
                .source_queue
                .clone()
                .unwrap_or_else(|| topology.seeds_queue());
            Some((queue, chunk.to_json(), headers))
        }
        Body::Script(mut script) => {
            script.attempt = 1;
            let queue = letter
                .source_queue
                .clone()
                .unwrap_or_else(|| topology.script_queue_for(script.node.as_deref()));
            Some((queue, script.to_json(), headers))
        }
        // A body no consumer understands would only come straight back.
        Body::Unknown => None,
    }
}

#[derive(Debug, Default, Serialize)]
struct DlqReport {
    action: String,
    matched: usize,
    replayed: usize,
    purged: usize,
    skipped_unreadable: usize,
    letters: Vec<DeadLetter>,
}

pub async fn run(env: &Env, args: DlqArgs) -> anyhow::Result<i32> {
    let broker = env.broker().await?;
    let topology = broker.topology().clone();
    let dlq = topology.dlq();
    let (action, filter) = match &args.action {
        DlqAction::List { job } => ("list", job.clone()),
        DlqAction::Replay { job } => ("replay", job.clone()),
        DlqAction::Purge { job, yes } => {
            if !yes {
                bail!("dlq purge deletes dead letters for good; add --yes to confirm");
            }
            ("purge", job.clone())
        }
    };
    let reader = broker.reader().await?;
    // Replays re-open their jobs in Redis (see `Store::reopen`).
    let store = if action == "replay" {
        let store = env.store().await?;
        env.check_unsigned_allowed(&store).await?;
        Some(store)
    } else {
        None
    };
    let mut report = DlqReport {
        action: action.to_string(),
        ..Default::default()
    };
    if action == "purge" && filter.is_none() {
        let purged = reader.purge(&dlq).await.context("purging the DLQ")?;
        report.purged = purged as usize;
    } else {
        // Take every message once (they stay unacked, so a reader never gets one twice), act on
        // the matching ones, and give the rest back.
        while let Some(message) = reader
            .get(&dlq)
            .await
            .with_context(|| format!("reading {dlq} (does the namespace exist?)"))?
        {
            let headers = message.headers();
            let letter = describe(&headers, message.body());
            let matches = filter
                .as_ref()
                .is_none_or(|job| letter.job.as_deref() == Some(job.as_str()));
            if !matches {
                continue;
            }
            report.matched += 1;
            match action {
                "replay" => match replay_target(&topology, &letter, &headers, message.body()) {
                    Some((queue, body, headers)) => {
                        if queue.starts_with(&format!("{}.scripts.", env.namespace)) {
                            let node = &queue[env.namespace.len() + ".scripts.".len()..];
                            broker
                                .ensure_node_scripts_queue(node, &env.cluster.broker)
                                .await?;
                        }
                        // Reopened before the publish, so a quick second failure of the replayed
                        // message is not erased; if the publish fails, the letter stays in the DLQ
                        // (unacked) and the next replay publishes it.
                        if let (Some(store), Some(job), Some(member)) =
                            (&store, &letter.job, &letter.member)
                        {
                            store.reopen(job, std::slice::from_ref(member)).await?;
                        }
                        broker
                            .publish_raw(&queue, &body, &headers)
                            .await
                            .with_context(|| format!("republishing to {queue}"))?;
                        message
                            .ack()
                            .await
                            .context("acking the replayed dead letter")?;
                        report.replayed += 1;
                    }
                    None => report.skipped_unreadable += 1,
                },
                "purge" => {
                    message
                        .ack()
                        .await
                        .context("acking the purged dead letter")?;
                    report.purged += 1;
                }
                _ => {}
            }
            report.letters.push(letter);
        }
        // Everything not acked goes back (closing the channel does it too if this fails).
        if let Err(e) = reader.give_back_all().await {
            tracing::debug!(error = %e, "nack of the unmatched dead letters; the channel close returns them");
        }
    }
    reader.close().await;
    broker.close().await;
    if env.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    for l in &report.letters {
        println!(
            "{:<24} {:<10} {:<16} attempt {:<3} {:<22} {} {}",
            l.job.as_deref().unwrap_or("?"),
            l.kind.as_deref().unwrap_or("?"),
            l.member.as_deref().unwrap_or("(unreadable body)"),
            l.attempt.as_deref().unwrap_or("?"),
            l.reason,
            l.source_queue
                .as_deref()
                .map(|q| format!("from {q}"))
                .unwrap_or_default(),
            l.detail.as_deref().unwrap_or("")
        );
    }
    match action {
        "list" => eprintln!(
            "{} dead letter(s){}",
            report.matched,
            filter.map(|j| format!(" of job {j}")).unwrap_or_default()
        ),
        "replay" => eprintln!(
            "replayed {} dead letter(s) to their queues with attempts reset{}",
            report.replayed,
            if report.skipped_unreadable > 0 {
                format!(
                    "; {} unreadable ones left in the DLQ",
                    report.skipped_unreadable
                )
            } else {
                String::new()
            }
        ),
        _ => eprintln!("purged {} dead letter(s)", report.purged),
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seedq_core::SeedSet;
    use seedq_protocol::JobKind;

    #[test]
    fn dead_letters_are_described_and_replayed_with_attempts_reset() {
        let topology = Topology::new("t1");
        let mut chunk = ChunkMessage::new(
            "job-1",
            JobKind::Sieve,
            7,
            SeedSet::Range { start: 70, end: 80 },
        );
        chunk.attempt = 5;
        let headers = Headers::from([
            (h::ERROR.to_string(), "invalid_spec".to_string()),
            (h::ERROR_DETAIL.to_string(), "bad".to_string()),
            (h::SOURCE_QUEUE.to_string(), "t1.seeds".to_string()),
            (h::ATTEMPT.to_string(), "5".to_string()),
            (h::KIND.to_string(), "sieve".to_string()),
        ]);
        let letter = describe(&headers, &chunk.to_json());
        assert_eq!(letter.member.as_deref(), Some("c7"));
        assert_eq!(letter.reason, "invalid_spec");
        let (queue, body, new_headers) =
            replay_target(&topology, &letter, &headers, &chunk.to_json()).unwrap();
        assert_eq!(queue, "t1.seeds");
        assert_eq!(ChunkMessage::from_json(&body).unwrap().attempt, 1);
        assert_eq!(new_headers.get(h::ATTEMPT).map(String::as_str), Some("1"));
        assert!(!new_headers.contains_key(h::ERROR));
        // Broker-side dead letters and unreadable bodies.
        let broker_side = Headers::from([(
            "x-first-death-reason".to_string(),
            "delivery_limit".to_string(),
        )]);
        let letter = describe(&broker_side, b"{not json");
        assert_eq!(letter.reason, "broker:delivery_limit");
        assert!(replay_target(&topology, &letter, &broker_side, b"{not json").is_none());
        // A pinned script job goes back to its node's queue.
        let script: ScriptJob = serde_json::from_value(serde_json::json!({
            "batch_id": "b", "task_id": "t", "script": "s.py", "timeout_secs": 5, "node": "zeus", "attempt": 3
        }))
        .unwrap();
        let letter = describe(&Headers::new(), &script.to_json());
        let (queue, body, _) =
            replay_target(&topology, &letter, &Headers::new(), &script.to_json()).unwrap();
        assert_eq!(queue, "t1.scripts.zeus");
        assert_eq!(ScriptJob::from_json(&body).unwrap().attempt, 1);
        // A letter refused for its signature is never re-signed by a replay.
        let unsigned = Headers::from([(h::ERROR.to_string(), "bad_signature".to_string())]);
        let letter = describe(&unsigned, &script.to_json());
        assert!(replay_target(&topology, &letter, &unsigned, &script.to_json()).is_none());
    }
}
