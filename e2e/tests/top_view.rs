//! `seedq-producer top` as a person sees it: under tmux (a real terminal) it draws jobs, nodes
//! with their slots and queue depths, refreshes in place and exits on `q`, leaving the terminal
//! usable; through a pipe it prints plain snapshots with no escape codes.

use std::process::Command;
use std::time::{Duration, Instant};

use seedq_e2e::{amqp_url, producer_bin, Namespace};

fn tmux(args: &[&str]) -> std::process::Output {
    Command::new("tmux").args(args).output().expect("run tmux")
}

fn draws(ns: &Namespace) -> String {
    let path = ns.path("draws.json");
    std::fs::write(&path, "[1, 2, 3, 4, 5, 6, 7, 8]").unwrap();
    path.to_str().unwrap().to_string()
}

/// A job that stays running for a while (the consumer is slow on purpose: one thread).
fn start_job(ns: &Namespace) -> String {
    ns.sieve(&[
        "--prng",
        "mt19937",
        "--draws",
        &draws(ns),
        "--window",
        "8",
        "--skip-min",
        "0",
        "--skip-max",
        "20",
        "--threshold",
        "1",
        "--seed-start",
        "0",
        "--seed-end",
        "4000000",
        "--chunk-size",
        "100000",
    ])
}

#[test]
fn top_draws_jobs_nodes_and_queues_under_tmux_and_quits_on_q() {
    if !Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        println!(
            "SKIP top_draws_jobs_nodes_and_queues_under_tmux_and_quits_on_q: tmux is not installed"
        );
        return;
    }
    let mut ns = Namespace::new("top");
    let job = start_job(&ns);
    ns.start_consumer("topnode", 1, 1);
    let session = ns.name.clone();
    let command = format!(
        "env SEEDQ_NAMESPACE={} SEEDQ_AMQP_URL='{}' SEEDQ_REDIS_URL='{}' {} --config {} top --interval 0.3; echo TOP-EXITED; sleep 30",
        ns.name,
        amqp_url(),
        ns.redis_url,
        producer_bin().display(),
        ns.config.display()
    );
    let out = tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "200",
        "-y",
        "50",
        &command,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let capture = || {
        String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut screen = String::new();
    while Instant::now() < deadline {
        screen = capture();
        if screen.contains(&job) && screen.contains("topnode") && screen.contains(".seeds") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        screen.contains("JOBS") && screen.contains(&job),
        "job shown:\n{screen}"
    );
    assert!(screen.contains("topnode"), "node shown:\n{screen}");
    assert!(screen.contains("cpu0:"), "slot state shown:\n{screen}");
    assert!(
        screen.contains(&format!("{}.seeds", ns.name)),
        "queue shown:\n{screen}"
    );
    // It refreshes in place: the frame changes (progress moves) without scrolling the header off.
    let first = screen.clone();
    let mut refreshed = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = capture();
        if now != first && now.lines().next() == first.lines().next() {
            refreshed = true;
            break;
        }
    }
    assert!(refreshed, "the view did not refresh in place:\n{first}");
    tmux(&["send-keys", "-t", &session, "q"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = String::new();
    while Instant::now() < deadline {
        after = capture();
        if after.contains("TOP-EXITED") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = tmux(&["kill-session", "-t", &session]);
    assert!(after.contains("TOP-EXITED"), "q quits:\n{after}");
    // Back on the normal screen: the alternate screen's frame is gone.
    assert!(
        !after.contains("QUEUES"),
        "the alternate screen was left:\n{after}"
    );
}

#[test]
fn top_through_a_pipe_prints_plain_snapshots() {
    let mut ns = Namespace::new("toppipe");
    let job = start_job(&ns);
    ns.start_consumer("pipenode", 1, 1);
    ns.wait_for_consumers(1, Duration::from_secs(60));
    let out = ns.producer_ok(&["top", "--iterations", "2", "--interval", "0.2"]);
    assert!(!out.contains('\u{1b}'), "no escape codes: {out:?}");
    assert_eq!(out.matches("JOBS").count(), 2, "two snapshots:\n{out}");
    assert!(out.contains(&job), "{out}");
    assert!(out.contains(&format!("{}.seeds", ns.name)), "{out}");
}
