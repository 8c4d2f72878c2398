//! Slot quarantine (issue 14, point 3), with a fault-injecting backend: a consumer built with the
//! test-only feature `seedq-consumer/fault-injection` (scripts/test.sh builds it so) takes
//! `--inject-fault SLOT=SPEC`, which makes one slot's CPU backend fail launches or drop
//! survivors. A launch is one backend call: a chunk of these jobs is one, a self-test is one per
//! family (11), so `after:11` spares the start-up self-test.
//!
//! * A slot whose backend fails 3 chunks in a row is quarantined (heartbeat, `nodes`, metrics),
//!   hands its chunk back without using an attempt, comes back when its retried self-test
//!   passes, and takes work again; the other slot never stops, and the job's survivors equal
//!   the reference exactly.
//! * A slot that silently drops 1 survivor in 100 is caught by its next periodic self-test.
//!   With verification off, it may have settled chunks with survivors missing between two
//!   self-tests: the self-test cannot prevent that, so that test checks what it can: the results
//!   hold no survivor the reference lacks, and the healthy slot finishes the job.
//!
//! * A slot that drops survivors between self-tests is caught by verification by redundancy
//!   (`--verify-fraction`): a verified chunk's two runs differ, the CPU reference decides, the
//!   slot is quarantined (`verify_mismatch`), and every chunk it completed since its last passed
//!   self-test is run again elsewhere, so the job's survivors equal the reference exactly.
//!
//! Without a consumer built with the feature the tests print SKIP with the reason.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use seedq_e2e::{consumer_bin, Namespace};
use seedq_kernels::{reference, Family, FamilyConfig, SeedSet, SieveSpec, Threshold};
use serde_json::{json, Value};

/// Whether the consumer binary offers `--inject-fault` (built with `fault-injection`).
fn fault_injection_available(test: &str) -> bool {
    let help = Command::new(consumer_bin())
        .args(["run", "--help"])
        .output()
        .expect("seedq-consumer run --help");
    let offered = String::from_utf8_lossy(&help.stdout).contains("--inject-fault");
    if !offered {
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIP {test}: this seedq-consumer was built without the test-only feature \
             `fault-injection` (build it with `--features seedq-consumer/fault-injection`, as \
             scripts/test.sh does)"
        );
    }
    offered
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The consumer's metrics exposition.
fn metrics(port: u16) -> Option<String> {
    let addr = format!("127.0.0.1:{port}");
    let mut stream = TcpStream::connect(&addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response.split_once("\r\n\r\n")?.1.to_string())
}

/// The value of the exact series `series` (name and labels).
fn sample(exposition: &str, series: &str) -> f64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// The slot's state in the node's heartbeat (`nodes --json`).
fn slot_state(ns: &Namespace, node: &str, slot: &str) -> Option<Value> {
    let out = ns.producer_ok(&["nodes", "--json"]);
    let v: Value = serde_json::from_str(&out).expect("nodes --json");
    v["nodes"].as_array()?.iter().find(|n| n["node"] == node)?["slots"]
        .as_array()?
        .iter()
        .find(|s| s["slot"] == slot)
        .cloned()
}

/// Polls `check` every half second (each poll runs the producer) until it holds.
fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// xorshift32, 6 draws mod 10, skips 0..=2, threshold 0.5: cheap per seed, many chance survivors.
struct Job {
    draws: Vec<u64>,
    draws_file: String,
}

impl Job {
    fn new(ns: &Namespace, planted: u64) -> Job {
        let fam = FamilyConfig::new(Family::Xorshift32);
        let draws: Vec<u64> = (0..6)
            .map(|i| fam.output_at(planted, 1 + i * 2) % 10)
            .collect();
        let draws_file = seedq_e2e::write_json(ns, &format!("draws-{planted}.json"), &json!(draws));
        Job { draws, draws_file }
    }

    fn enqueue(&self, ns: &Namespace, start: u64, end: u64, chunk: u64) -> String {
        self.enqueue_with(ns, start, end, chunk, &[])
    }

    fn enqueue_with(
        &self,
        ns: &Namespace,
        start: u64,
        end: u64,
        chunk: u64,
        extra: &[&str],
    ) -> String {
        let (start, end, chunk) = (start.to_string(), end.to_string(), chunk.to_string());
        let mut args = vec![
            "--prng",
            "xorshift32",
            "--draws",
            &self.draws_file,
            "--modulus",
            "10",
            "--skip-min",
            "0",
            "--skip-max",
            "2",
            "--threshold",
            "0.5",
            "--seed-start",
            &start,
            "--seed-end",
            &end,
            "--chunk-size",
            &chunk,
        ];
        args.extend_from_slice(extra);
        ns.sieve(&args)
    }

    fn expected_seeds(&self, start: u64, end: u64) -> Vec<u64> {
        let spec = SieveSpec {
            family: FamilyConfig::new(Family::Xorshift32),
            draws: self.draws.clone(),
            modulus: 10,
            offset: 0,
            offset_max: None,
            skip_min: 0,
            skip_max: 2,
            threshold: Threshold::parse("0.5").unwrap(),
            reverse_threshold: None,
            direction: Default::default(),
            skip_mode: Default::default(),
        };
        reference::sieve(&spec, &SeedSet::Range { start, end })
            .survivors
            .iter()
            .map(|s| s.seed)
            .collect()
    }
}

fn seeds_of(ns: &Namespace, job_id: &str) -> Vec<u64> {
    ns.results(job_id)
        .iter()
        .map(|r| r["seed"].as_u64().unwrap())
        .collect()
}

/// Every chunk done once, none dead-lettered, the survivors exactly the reference's.
fn assert_exact(ns: &Namespace, job_id: &str, job: &Job, start: u64, end: u64) {
    let status = ns.status(job_id);
    assert_eq!(status["chunks_done"], status["chunks_total"], "{status}");
    assert_eq!(status["seeds_done"].as_u64(), Some(end - start), "{status}");
    assert_eq!(status["dead_lettered"].as_u64().unwrap_or(0), 0, "{status}");
    let expected = job.expected_seeds(start, end);
    assert!(expected.len() > 10, "the job should have survivors");
    assert_eq!(
        seeds_of(ns, job_id),
        expected,
        "survivors differ from the reference"
    );
    assert_eq!(
        status["survivors"].as_u64(),
        Some(expected.len() as u64),
        "{status}"
    );
}

fn chunks_done_of(ns: &Namespace, node: &str, slot: &str) -> u64 {
    slot_state(ns, node, slot).map_or(0, |s| s["chunks_done"].as_u64().unwrap_or(0))
}

#[test]
fn backend_errors_in_a_row_quarantine_the_slot_until_its_self_test_passes() {
    if !fault_injection_available(
        "backend_errors_in_a_row_quarantine_the_slot_until_its_self_test_passes",
    ) {
        return;
    }
    let mut ns = Namespace::new("quar-err");
    let node = format!("{}-n", ns.name);
    let port = free_port();
    let port_text = port.to_string();
    // cpu1: the start-up self-test (launches 0..11) passes, then its next three launches fail
    // (chunks), which quarantines it; from launch 14 on its backend is sound again, so the
    // self-test retried 12 s later passes (12 s: long enough for a heartbeat, every 5 s, to
    // show the quarantine).
    ns.start_consumer_with(
        &node,
        &[
            "--backend",
            "cpu",
            "--slots",
            "2",
            "--cpu-threads",
            "1",
            "--prefetch",
            "1",
            "--no-calibrate",
            "--no-scripts",
            "--metrics-port",
            &port_text,
            "--self-test-interval",
            "600",
            "--quarantine-after-errors",
            "3",
            "--self-test-retry",
            "12",
            "--inject-fault",
            "cpu1=error:1,after:11,until:14",
        ],
    );
    ns.wait_for_consumers(1, Duration::from_secs(60));
    let job = Job::new(&ns, 4_242);
    let (start, end) = (1, 1_000_001);
    let id = job.enqueue(&ns, start, end, 5_000);

    // The quarantine shows in the heartbeat with its reason while it lasts.
    let mut seen = None;
    wait_until(
        "cpu1 quarantined in the heartbeat",
        Duration::from_secs(60),
        || {
            seen = slot_state(&ns, &node, "cpu1").and_then(|s| s.get("quarantined").cloned());
            seen.is_some()
        },
    );
    let q = seen.unwrap();
    assert_eq!(q["reason"], "backend_errors", "{q}");
    assert!(
        q["since_ms"].as_u64().is_some() && q["next_test_at_ms"].as_u64().is_some(),
        "{q}"
    );
    let text = ns.producer_ok(&["nodes"]);
    assert!(
        text.contains("quarantined: backend_errors since"),
        "`nodes` shows the quarantine:\n{text}"
    );
    let m = metrics(port).expect("metrics");
    assert_eq!(sample(&m, "seedq_slot_quarantined{slot=\"cpu1\"}"), 1.0);
    assert_eq!(sample(&m, "seedq_slot_quarantined{slot=\"cpu0\"}"), 0.0);

    ns.wait(&id, 300);
    assert_exact(&ns, &id, &job, start, end);
    // Two failed attempts were the chunks' (retried); the third error quarantined the slot and
    // handed its chunk back without an attempt.
    let status = ns.status(&id);
    assert_eq!(
        status["failures"]["backend_error"].as_u64(),
        Some(2),
        "{status}"
    );

    // The retried self-test passes: back in service, and it takes work again.
    wait_until("cpu1 back in service", Duration::from_secs(60), || {
        slot_state(&ns, &node, "cpu1").is_some_and(|s| s.get("quarantined").is_none())
    });
    let m = metrics(port).expect("metrics");
    assert_eq!(sample(&m, "seedq_slot_quarantined{slot=\"cpu1\"}"), 0.0);
    assert_eq!(
        sample(
            &m,
            "seedq_slot_quarantines_total{slot=\"cpu1\",reason=\"backend_errors\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(&m, "seedq_self_tests_total{slot=\"cpu1\",result=\"pass\"}"),
        2.0
    );
    assert_eq!(
        sample(&m, "seedq_self_tests_total{slot=\"cpu0\",result=\"fail\"}"),
        0.0
    );
    assert!(
        !m.contains("seedq_slot_quarantines_total{slot=\"cpu0\""),
        "cpu0 never quarantined"
    );
    let before = chunks_done_of(&ns, &node, "cpu1");
    let id2 = job.enqueue(&ns, 1_000_001, 1_400_001, 5_000);
    ns.wait(&id2, 300);
    assert_exact(&ns, &id2, &job, 1_000_001, 1_400_001);
    wait_until("cpu1 took chunks again", Duration::from_secs(30), || {
        chunks_done_of(&ns, &node, "cpu1") > before
    });
}

#[test]
fn a_slot_dropping_survivors_is_caught_by_its_next_self_test() {
    if !fault_injection_available("a_slot_dropping_survivors_is_caught_by_its_next_self_test") {
        return;
    }
    let mut ns = Namespace::new("quar-drop");
    let node = format!("{}-n", ns.name);
    let port = free_port();
    let port_text = port.to_string();
    // cpu1's self-tests run every 0.5 s of work; it drops 1 survivor in 100 from launch 40 on,
    // after its start-up self-test (launches 0..11) and some sound chunks. Its chunks from then
    // on miss survivors until its next self-test catches it. The job lasts seconds.
    ns.start_consumer_with(
        &node,
        &[
            "--backend",
            "cpu",
            "--slots",
            "2",
            "--cpu-threads",
            "1",
            "--prefetch",
            "1",
            "--no-calibrate",
            "--no-scripts",
            "--metrics-port",
            &port_text,
            "--self-test-interval",
            "0.5",
            "--self-test-retry",
            "600",
            "--inject-fault",
            "cpu1=drop:0.01,after:40",
        ],
    );
    ns.wait_for_consumers(1, Duration::from_secs(60));
    let job = Job::new(&ns, 777);
    let (start, end) = (1, 6_000_001);
    // Verification off: this test is about what the self-test alone catches.
    let id = job.enqueue_with(&ns, start, end, 5_000, &["--verify-fraction", "0"]);

    let mut seen = None;
    wait_until(
        "cpu1 quarantined in the heartbeat",
        Duration::from_secs(120),
        || {
            seen = slot_state(&ns, &node, "cpu1").and_then(|s| s.get("quarantined").cloned());
            seen.is_some()
        },
    );
    let q = seen.unwrap();
    assert_eq!(q["reason"], "self_test_failed", "{q}");
    let m = metrics(port).expect("metrics");
    assert_eq!(
        sample(&m, "seedq_self_tests_total{slot=\"cpu1\",result=\"fail\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "seedq_self_tests_total{slot=\"cpu0\",result=\"fail\"}"),
        0.0
    );
    let cpu1_done = chunks_done_of(&ns, &node, "cpu1");
    // A periodic self-test runs only before a chunk, so the sound launches 11..40 hold one.
    assert!(
        cpu1_done >= 1,
        "cpu1 worked before the fault: {cpu1_done} chunks"
    );

    ns.wait(&id, 600);
    let status = ns.status(&id);
    assert_eq!(status["chunks_done"], status["chunks_total"], "{status}");
    assert_eq!(status["seeds_done"].as_u64(), Some(end - start), "{status}");
    assert_eq!(status["dead_lettered"].as_u64().unwrap_or(0), 0, "{status}");
    // The quarantined slot took nothing more; the healthy one did the rest (the heartbeat is
    // rewritten every 5 s).
    let total = status["chunks_total"].as_u64().unwrap();
    wait_until(
        "the heartbeat counts every chunk",
        Duration::from_secs(30),
        || chunks_done_of(&ns, &node, "cpu0") + cpu1_done == total,
    );
    assert_eq!(chunks_done_of(&ns, &node, "cpu1"), cpu1_done);
    // What the self-test alone cannot prevent: chunks cpu1 settled before its self-test may miss
    // survivors; it never invents one.
    let expected = job.expected_seeds(start, end);
    let got = seeds_of(&ns, &id);
    assert!(
        got.iter().all(|s| expected.binary_search(s).is_ok()),
        "no invented survivor"
    );
    let _ = writeln!(
        std::io::stderr().lock(),
        "quarantine: the dropping slot settled {cpu1_done} of {total} chunks before its self-test \
         caught it; {} of {} survivors missing",
        expected.len() - got.len(),
        expected.len()
    );
}

#[test]
fn a_slot_dropping_survivors_is_caught_by_verification_and_every_wrong_chunk_is_redone() {
    if !fault_injection_available(
        "a_slot_dropping_survivors_is_caught_by_verification_and_every_wrong_chunk_is_redone",
    ) {
        return;
    }
    let mut ns = Namespace::new("quar-verify");
    let bad_node = format!("{}-rig", ns.name);
    let good_node = format!("{}-zeus", ns.name);
    // The rig's slot drops 1 survivor in 20 from its first chunk on, and its periodic
    // self-test is an hour away: only verification can catch it. Zeus is sound.
    let common = [
        "--backend",
        "cpu",
        "--slots",
        "1",
        "--cpu-threads",
        "1",
        "--prefetch",
        "1",
        "--no-calibrate",
        "--no-scripts",
        "--self-test-interval",
        "3600",
        "--self-test-retry",
        "600",
    ];
    let mut bad_args = common.to_vec();
    bad_args.extend(["--inject-fault", "cpu0=drop:0.05,after:11"]);
    ns.start_consumer_with(&bad_node, &bad_args);
    ns.start_consumer_with(&good_node, &common);
    ns.wait_for_consumers(2, Duration::from_secs(60));
    let job = Job::new(&ns, 4242);
    let (start, end) = (1, 4_000_001);
    let started = Instant::now();
    let id = job.enqueue_with(&ns, start, end, 5_000, &["--verify-fraction", "0.2"]);

    let mut seen = None;
    wait_until(
        "the rig's slot quarantined by a verification",
        Duration::from_secs(240),
        || {
            seen = slot_state(&ns, &bad_node, "cpu0").and_then(|s| s.get("quarantined").cloned());
            seen.is_some()
        },
    );
    let to_quarantine = started.elapsed();
    let q = seen.unwrap();
    assert_eq!(q["reason"], "verify_mismatch", "{q}");
    let bad_done = chunks_done_of(&ns, &bad_node, "cpu0");

    ns.wait(&id, 600);
    // Every chunk the rig completed is decided again (by the reference or a redo on zeus), so
    // the results equal the reference exactly, each chunk counted once.
    assert_exact(&ns, &id, &job, start, end);
    let status = ns.status(&id);
    let v = &status["verification"];
    assert!(v["mismatches"].as_u64().unwrap() >= 1, "{status}");
    assert!(v["corrected"].as_u64().unwrap() >= 1, "{status}");
    // With the rig out, zeus' own chunks have no other node to verify them: given up.
    let drawn = ["verified", "mismatches", "unverified"]
        .map(|k| v[k].as_u64().unwrap())
        .iter()
        .sum::<u64>();
    assert!(drawn >= 1, "{status}");
    assert_eq!(v["pending"].as_u64(), Some(0), "{status}");
    // The healthy node never stopped.
    assert!(
        slot_state(&ns, &good_node, "cpu0")
            .is_some_and(|s| s.get("quarantined").is_none_or(Value::is_null)),
        "zeus stays in service"
    );
    let text = String::from_utf8_lossy(&ns.producer(&["status", &id]).stdout).to_string();
    assert!(text.contains("mismatches"), "{text}");
    let _ = writeln!(
        std::io::stderr().lock(),
        "verification: the rig's slot (drops 1 survivor in 20, 20% of chunks verified) was \
         quarantined {:.1} s after the enqueue, having settled {bad_done} chunks; {v}",
        to_quarantine.as_secs_f64()
    );
}
