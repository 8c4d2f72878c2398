//! Survivor sets of any size, end to end against the real RabbitMQ and a private Redis: a job
//! that keeps millions of survivors completes exactly with no slow Redis command and a few bytes
//! of Redis memory per survivor; `results` streams them; count-only jobs keep counts that equal
//! the full job's; a job over the survivor limit is refused before anything is published; a
//! consumer killed mid-job on a large-survivor job changes nothing.

use std::time::Duration;

use seedq_e2e::{queue_info, Namespace, PrivateRedis};
use seedq_kernels::cpu::CpuBackend;
use seedq_kernels::{
    Direction, Family, FamilyConfig, SeedSet, SieveBackend, SieveSpec, SkipMode, Threshold,
};
use serde_json::Value;

/// The loosest shape there is: one draw mod 2, skip 0, threshold 1: about half of all seeds
/// survive (lcg32's low bit alternates, so exactly every other seed).
fn loose_args(draws_file: &str, seeds: u64) -> Vec<String> {
    [
        "--prng",
        "lcg32",
        "--draws",
        draws_file,
        "--window",
        "1",
        "--modulus",
        "2",
        "--skip-min",
        "0",
        "--skip-max",
        "0",
        "--threshold",
        "1",
        "--seed-start",
        "0",
        "--seed-end",
        &seeds.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn loose_spec(direction: Direction) -> SieveSpec {
    SieveSpec {
        family: FamilyConfig::new(Family::Lcg32),
        draws: vec![1],
        modulus: 2,
        offset: 0,
        offset_max: None,
        skip_min: 0,
        skip_max: 0,
        threshold: Threshold::parse("1").unwrap(),
        reverse_threshold: None,
        direction,
        skip_mode: SkipMode::Constant,
    }
}

/// The reference answer's surviving seeds, computed in parts (a few bytes a seed, not a full
/// record each).
fn expected_seeds(spec: &SieveSpec, end: u64) -> Vec<u64> {
    let backend = CpuBackend::new(2);
    let mut out = Vec::new();
    let mut lo = 0;
    while lo < end {
        let hi = (lo + (1 << 20)).min(end);
        let part = backend
            .sieve(spec, &SeedSet::Range { start: lo, end: hi })
            .unwrap();
        out.extend(part.survivors.iter().map(|s| s.seed));
        lo = hi;
    }
    out
}

fn draws_file(ns: &Namespace, values: &[u64]) -> String {
    let path = ns.path("draws.json");
    std::fs::write(&path, serde_json::to_string(values).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

fn redis(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn a_five_million_survivor_job_is_exact_compact_and_streams() {
    let Some(private) = PrivateRedis::start() else {
        println!("SKIP a_five_million_survivor_job_is_exact_compact_and_streams: redis-server is not installed");
        return;
    };
    let mut ns = Namespace::new("surv5m");
    ns.redis_url = private.url();
    let mut con = redis(&ns.redis_url);
    // Log every command slower than 50 ms (a private server: its configuration is ours).
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(50_000)
        .query::<()>(&mut con)
        .unwrap();
    redis::cmd("SLOWLOG")
        .arg("RESET")
        .query::<()>(&mut con)
        .unwrap();
    let before: u64 = used_memory(&mut con);

    let seeds = 10_000_000u64;
    let draws = draws_file(&ns, &[1]);
    let mut a = loose_args(&draws, seeds);
    // Two chunks of 5M seeds: 2.5M survivors each.
    a.extend([
        "--chunk-size".into(),
        "5000000".into(),
        "--max-survivors".into(),
        "6000000".into(),
    ]);
    let job = ns.sieve(&args(&a));
    ns.start_consumer("n1", 1, 2);
    ns.wait(&job, 600);

    let expected = expected_seeds(&loose_spec(Direction::Forward), seeds);
    let status = ns.status(&job);
    let count = status["survivors"].as_u64().unwrap();
    assert_eq!(count, expected.len() as u64, "status: {status}");
    assert!(
        count >= 4_900_000,
        "about half of 10M seeds survive: {count}"
    );

    // Redis memory per survivor, and no command over 50 ms.
    let after: u64 = used_memory(&mut con);
    let per_survivor = (after.saturating_sub(before)) as f64 / count as f64;
    let slow: Vec<Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(128)
        .query::<redis::Value>(&mut con)
        .map(|v| match v {
            redis::Value::Array(entries) => entries
                .iter()
                .map(|e| Value::String(format!("{e:?}")))
                .collect(),
            _ => vec![],
        })
        .unwrap();
    println!(
        "5M job: {count} survivors, Redis memory {:.2} bytes/survivor, {} commands over 50 ms",
        per_survivor,
        slow.len()
    );
    assert!(slow.is_empty(), "commands over 50 ms: {slow:?}");
    assert!(per_survivor <= 16.0, "{per_survivor:.2} bytes per survivor");

    // Streamed out: one JSON line per survivor, in seed order, equal to the reference.
    let out = ns
        .producer_cmd(&["results", &job, "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = 0u64;
    let mut previous = None;
    for (line, want) in text.lines().zip(&expected) {
        let row: Value = serde_json::from_str(line).unwrap();
        let seed = row["seed"].as_u64().unwrap();
        assert_eq!(seed, *want);
        assert!(previous.is_none_or(|p| p < seed));
        previous = Some(seed);
        lines += 1;
    }
    assert_eq!(text.lines().count() as u64, count, "jsonl lines");
    assert_eq!(lines, count);
    // --top and --min-rate filter the stream.
    let top = ns.producer_ok(&["results", &job, "--format", "jsonl", "--top", "5"]);
    assert_eq!(top.lines().count(), 5);
    let none = ns.producer_ok(&["results", &job, "--format", "jsonl", "--min-rate", "1.01"]);
    assert_eq!(none.lines().count(), 0);
    ns.redis_url = seedq_e2e::redis_url();
    drop(private);
}

fn used_memory(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("memory").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO")
}

#[test]
fn count_only_bidirectional_counts_equal_the_full_job() {
    let mut ns = Namespace::new("countonly");
    let draws = draws_file(&ns, &[3, 1, 4, 1, 5, 9, 2, 6]);
    let common = [
        "--prng",
        "xorshift32",
        "--draws",
        &draws,
        "--window",
        "8",
        "--modulus",
        "4",
        "--skip-min",
        "0",
        "--skip-max",
        "3",
        "--threshold",
        "0.5",
        "--direction",
        "bidirectional",
        "--seed-start",
        "1",
        "--seed-end",
        "400001",
        "--chunk-size",
        "50000",
    ];
    let full = ns.sieve(&common);
    let mut counted_args = common.to_vec();
    counted_args.push("--count-only");
    let counted = ns.sieve(&counted_args);
    assert_ne!(full, counted, "count-only is a different job");
    ns.start_consumer("n1", 2, 1);
    ns.wait(&full, 300);
    ns.wait(&counted, 300);
    let rows = ns.results(&full);
    let counts: Value =
        serde_json::from_str(&ns.producer_ok(&["results", &counted, "--format", "json"])).unwrap();
    assert_eq!(
        counts["survivors"].as_u64().unwrap(),
        rows.len() as u64,
        "{counts}"
    );
    // The reverse pass ran on forward survivors: its count is the intersection.
    assert_eq!(
        counts["reverse"]["survivors"].as_u64().unwrap(),
        rows.len() as u64
    );
    // The forward histogram counts every forward survivor by its best match count.
    let spec = SieveSpec {
        family: FamilyConfig::new(Family::Xorshift32),
        draws: vec![3, 1, 4, 1, 5, 9, 2, 6],
        modulus: 4,
        offset: 0,
        offset_max: None,
        skip_min: 0,
        skip_max: 3,
        threshold: Threshold::parse("0.5").unwrap(),
        reverse_threshold: None,
        direction: Direction::Forward,
        skip_mode: SkipMode::Constant,
    };
    let forward = CpuBackend::new(2)
        .sieve(
            &spec,
            &SeedSet::Range {
                start: 1,
                end: 400_001,
            },
        )
        .unwrap();
    let hist = counts["forward"]["best_matches"].as_object().unwrap();
    let total: u64 = hist.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, forward.survivors.len() as u64);
    for (matches, n) in hist {
        let m: u32 = matches.parse().unwrap();
        let want = forward
            .survivors
            .iter()
            .filter(|s| s.forward.as_ref().unwrap().matches == m)
            .count() as u64;
        assert_eq!(n.as_u64().unwrap(), want, "histogram at {m}");
    }
    // Status shows the counted survivors too.
    assert_eq!(
        ns.status(&counted)["survivors"].as_u64().unwrap(),
        rows.len() as u64
    );
    let _ = ns.consumer(0);
}

#[test]
fn a_job_over_the_survivor_limit_is_refused_before_publishing() {
    let ns = Namespace::new("survlimit");
    let draws = draws_file(&ns, &[1]);
    // 2^32 seeds at a 50% survival rate: ~2.1e9 expected survivors, far over the default limit.
    let mut a = loose_args(&draws, 1 << 32);
    a.push("--json".into());
    let mut cmd = vec!["sieve".to_string()];
    cmd.extend(a.clone());
    let out = ns.producer(&args(&cmd));
    assert!(!out.status.success(), "refused");
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "expected",
        "survivors",
        "--max-survivors",
        "--count-only",
        "threshold",
    ] {
        assert!(err.contains(needle), "message names {needle}: {err}");
    }
    let queue = format!("{}.seeds", ns.name);
    let queued = queue_info(&queue)
        .ok()
        .flatten()
        .and_then(|q| q["messages"].as_u64())
        .unwrap_or(0);
    assert_eq!(queued, 0, "nothing published");
    // Accepted with --count-only, and with a raised limit; the plan states the estimate.
    let mut counted = cmd.clone();
    counted.push("--count-only".into());
    let plan: Value = serde_json::from_str(ns.producer_ok(&args(&counted)).trim()).unwrap();
    let estimate = plan["expected_survivors"].as_f64().unwrap();
    assert!((2.0e9..2.3e9).contains(&estimate), "{plan}");
    let mut raised = cmd.clone();
    raised.extend(["--max-survivors".into(), "3000000000".into()]);
    let plan: Value = serde_json::from_str(ns.producer_ok(&args(&raised)).trim()).unwrap();
    assert!(plan["job_id"].as_str().is_some(), "{plan}");
}

#[test]
fn a_consumer_killed_mid_job_on_a_large_survivor_job_changes_nothing() {
    let mut ns = Namespace::new("survkill");
    let seeds = 4_000_000u64;
    let draws = draws_file(&ns, &[1]);
    let mut a = loose_args(&draws, seeds);
    a.extend(["--chunk-size".into(), "250000".into()]);
    let job = ns.sieve(&args(&a));
    let first = ns.start_consumer("victim", 1, 1);
    seedq_e2e::eventually("some chunks done", Duration::from_secs(120), || {
        ns.status(&job)["chunks_done"].as_u64().unwrap_or(0) >= 2
    });
    ns.consumer(first).kill();
    ns.start_consumer("n2", 2, 1);
    ns.wait(&job, 300);
    let expected = expected_seeds(&loose_spec(Direction::Forward), seeds);
    let status = ns.status(&job);
    assert_eq!(status["survivors"].as_u64().unwrap(), expected.len() as u64);
    assert_eq!(status["seeds_done"].as_u64().unwrap(), seeds);
    let out = ns
        .producer_cmd(&["results", &job, "--format", "jsonl"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), expected.len());
    for (line, want) in text.lines().zip(&expected).step_by(997) {
        let row: Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["seed"].as_u64().unwrap(), *want);
    }
}
