//! `correlation` and `analysis` jobs through the whole system (producer -> RabbitMQ -> consumer
//! -> Redis -> `results`): the flagged seeds and the merged summary equal what
//! `seedq_kernels::analysis::run` returns over the whole seed set in one call.
//!
//! Every job has several chunks (run on two slots, in any order), so "equal" checks that the
//! chunk plan covers each seed once and that the per-chunk summaries add up exactly. Each job
//! includes seeds known to be flagged: xorshift32 seed 0 (a constant stream, degenerate in
//! every test) and lcg32 modulo 2^32 read mod 8 (its low three bits have period 8, so lag 8 is
//! perfectly correlated), next to chance flags of good generators.
//!
//! Bad input (a lag beyond samples/4, `--bins` for correlation, an unknown family, a range
//! outside the seed space...) is refused with a message naming the flag, before anything is
//! written to Redis or published.

use std::time::Duration;

use seedq_e2e::Namespace;
use seedq_kernels::analysis::{
    self, AnalysisKind, AnalysisOutcome, AnalysisSpec, FlaggedRecord, Summary,
};
use seedq_kernels::{FamilyConfig, SeedSet};
use seedq_protocol::Topology;
use serde_json::Value;

/// One job: what the command line asks for and the same spec for the direct run.
struct Case {
    label: &'static str,
    kind: AnalysisKind,
    spec: AnalysisSpec,
    seeds: SeedSet,
    /// Extra flags (`--chunk-size`, `--seeds-file`...).
    extra: Vec<String>,
    /// `--param` pairs, also used to build the expected spec's family.
    params: Vec<(&'static str, &'static str)>,
}

impl Case {
    fn new(
        label: &'static str,
        kind: AnalysisKind,
        family: &str,
        params: &[(&'static str, &'static str)],
    ) -> Case {
        let spec = AnalysisSpec::new(FamilyConfig::parse(family, params).unwrap());
        Case {
            label,
            kind,
            spec,
            seeds: SeedSet::Range { start: 0, end: 1 },
            extra: Vec::new(),
            params: params.to_vec(),
        }
    }

    fn command(&self) -> &'static str {
        match self.kind {
            AnalysisKind::Correlation => "correlation",
            AnalysisKind::Analysis => "analysis",
        }
    }

    fn args(&self) -> Vec<String> {
        let s = &self.spec;
        let mut a: Vec<String> = vec![
            self.command().into(),
            "--json".into(),
            "--prng".into(),
            s.family.family().name().into(),
            "--modulus".into(),
            s.modulus.to_string(),
            "--offset".into(),
            s.offset.to_string(),
            "--samples".into(),
            s.samples.to_string(),
            "--max-lag".into(),
            s.max_lag.to_string(),
            "--alpha".into(),
            s.alpha.to_string(),
        ];
        for (k, v) in &self.params {
            a.push("--param".into());
            a.push(format!("{k}={v}"));
        }
        if let Some(b) = s.bins {
            a.push("--bins".into());
            a.push(b.to_string());
        }
        if let SeedSet::Range { start, end } = &self.seeds {
            a.extend([
                "--seed-start".into(),
                start.to_string(),
                "--seed-end".into(),
                end.to_string(),
            ]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    fn expected(&self) -> AnalysisOutcome {
        self.spec.validate(self.kind).unwrap();
        analysis::run(self.kind, &self.spec, &self.seeds)
    }
}

fn enqueue(ns: &Namespace, case: &Case) -> Value {
    let args = case.args();
    let out = ns.producer_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("{}: `{}` printed {out:?}: {e}", case.label, case.command()))
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn close_all(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| close(*x, *y))
}

fn close_opt(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => close(x, y),
        (None, None) => true,
        _ => false,
    }
}

/// Seeds, failing tests and the constant flag exactly; statistics up to JSON float round trips.
fn assert_same_record(label: &str, got: &FlaggedRecord, want: &FlaggedRecord) {
    assert_eq!(
        (got.seed, &got.tests, got.constant),
        (want.seed, &want.tests, want.constant),
        "{label}: record differs"
    );
    let same = close_all(&got.autocorrelations, &want.autocorrelations)
        && close_all(&got.z_scores, &want.z_scores)
        && close(got.autocorrelation_p, want.autocorrelation_p)
        && close(got.ljung_box_q, want.ljung_box_q)
        && close(got.ljung_box_p, want.ljung_box_p)
        && close_opt(got.chi_square, want.chi_square)
        && close_opt(got.chi_square_p, want.chi_square_p)
        && close_opt(got.runs_z, want.runs_z)
        && close_opt(got.runs_p, want.runs_p);
    assert!(
        same,
        "{label}: statistics of seed {} differ:\n got  {got:?}\n want {want:?}",
        got.seed
    );
}

fn check_job(ns: &Namespace, case: &Case, job: &str) {
    let label = case.label;
    let expected = case.expected();
    assert!(
        !expected.flagged.is_empty(),
        "{label}: the case must flag seeds to be a real check"
    );

    let out = ns.producer_ok(&["results", job, "--format", "json"]);
    let got: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{label}: results printed {out:?}: {e}"));
    assert_eq!(got["job_id"], job, "{label}");
    assert_eq!(got["kind"], case.command(), "{label}");
    let summary: Summary = serde_json::from_value(got["summary"].clone())
        .unwrap_or_else(|e| panic!("{label}: summary {e}: {got}"));
    assert_eq!(
        summary, expected.summary,
        "{label}: merged summary differs from the direct run"
    );
    assert_eq!(summary.seeds_tested, case.seeds.len(), "{label}");
    let flagged: Vec<FlaggedRecord> = serde_json::from_value(got["flagged"].clone()).unwrap();
    assert_eq!(
        flagged.iter().map(|r| r.seed).collect::<Vec<_>>(),
        expected.flagged.iter().map(|r| r.seed).collect::<Vec<_>>(),
        "{label}: flagged seeds differ from the direct run"
    );
    for (g, w) in flagged.iter().zip(&expected.flagged) {
        assert_same_record(label, g, w);
    }

    // CSV: a header and one row per flagged seed, in seed order.
    let csv = ns.producer_ok(&["results", job, "--format", "csv"]);
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("seed,tests,constant,autocorrelation_p,"),
        "{label}: {csv}"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), expected.flagged.len(), "{label}: {csv}");
    for (row, record) in rows.iter().zip(&expected.flagged) {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields[0], record.seed.to_string(), "{label}: {row}");
        assert_eq!(fields[1], record.tests.join(" "), "{label}: {row}");
    }

    // status: every chunk and seed done, and the same merged summary.
    let status = ns.status(job);
    assert_eq!(
        status["chunks_done"], status["chunks_total"],
        "{label}: {status}"
    );
    assert_eq!(
        status["seeds_done"].as_u64(),
        Some(case.seeds.len()),
        "{label}: {status}"
    );
    assert_eq!(
        status["survivors"].as_u64(),
        Some(expected.flagged.len() as u64),
        "{label}: {status}"
    );
    let status_summary: Summary = serde_json::from_value(status["summary"].clone())
        .unwrap_or_else(|e| panic!("{label}: {e}: {status}"));
    assert_eq!(status_summary, expected.summary, "{label}: status summary");
}

#[test]
fn correlation_and_analysis_jobs_equal_the_direct_run() {
    let mut ns = Namespace::new("analysis");
    ns.start_consumer(&format!("{}-node", ns.name), 2, 1);

    // xorshift32 from seed 0: seed 0 is a constant stream (always flagged), alpha 0.01 adds
    // chance flags. Fixed chunks of 100: 8 chunks.
    let mut xorshift = Case::new(
        "correlation xorshift32",
        AnalysisKind::Correlation,
        "xorshift32",
        &[],
    );
    xorshift.spec.samples = 400;
    xorshift.spec.max_lag = 10;
    xorshift.spec.offset = 3;
    xorshift.spec.alpha = 0.01;
    xorshift.seeds = SeedSet::Range { start: 0, end: 800 };
    xorshift.extra = vec!["--chunk-size".into(), "100".into()];

    // lcg32 mod 2^32 read mod 8: period 8, so r_8 is about 1 for every seed. Sized by the
    // planner (work per seed = samples x (lags + 1)); 1000 seeds make at least two chunks.
    let mut lcg = Case::new(
        "analysis lcg32 mod 8",
        AnalysisKind::Analysis,
        "lcg32",
        &[("m", "0")],
    );
    lcg.spec.modulus = 8;
    lcg.spec.bins = Some(8);
    lcg.spec.samples = 512;
    lcg.spec.max_lag = 8;
    lcg.seeds = SeedSet::Range {
        start: 1000,
        end: 2000,
    };

    // A candidate list (unsorted, with a duplicate) including xorshift32's seed 0; chunks of 7.
    let mut listed = Case::new(
        "analysis xorshift32 --seeds-file",
        AnalysisKind::Analysis,
        "xorshift32",
        &[],
    );
    listed.spec.samples = 1000;
    listed.spec.max_lag = 5;
    listed.spec.alpha = 0.05;
    let mut list: Vec<u64> = (1..60u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9) % (1 << 32))
        .collect();
    list.extend([0, 4_294_967_295, 77, 77]);
    let seeds_file = ns.path("seeds.txt");
    std::fs::write(
        &seeds_file,
        list.iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    list.sort_unstable();
    list.dedup();
    listed.seeds = SeedSet::List(list);
    listed.extra = vec![
        "--seeds-file".into(),
        seeds_file.to_str().unwrap().into(),
        "--chunk-size".into(),
        "7".into(),
    ];

    let cases = [xorshift, lcg, listed];
    let mut jobs = Vec::new();
    for case in &cases {
        let report = enqueue(&ns, case);
        let job = report["job_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no job_id in {report}", case.label))
            .to_string();
        assert!(
            job.starts_with(&format!(
                "{}-{}-",
                case.command(),
                case.spec.family.family().name()
            )),
            "{}: derived id {job}",
            case.label
        );
        assert_eq!(report["kind"], case.command(), "{}: {report}", case.label);
        assert_eq!(report["job"], "created", "{}: {report}", case.label);
        let chunks = report["chunks"].as_u64().unwrap();
        assert!(
            chunks >= 2,
            "{}: needs several chunks, got {report}",
            case.label
        );
        // What the seed queue has room for goes out at once (nothing, when the jobs enqueued
        // before fill it); the consumers publish the rest as work settles.
        let published = report["published"].as_u64().unwrap();
        assert!(published <= chunks, "{}: {report}", case.label);
        assert_eq!(report["priority"], "normal", "{}: {report}", case.label);
        jobs.push(job);
    }

    for (case, job) in cases.iter().zip(&jobs) {
        ns.wait(job, 600);
        check_job(&ns, case, job);
    }

    // The known flags are there, for the reasons given in the module doc.
    let xorshift_flags = cases[0].expected().flagged;
    assert!(
        xorshift_flags[0].seed == 0 && xorshift_flags[0].constant,
        "{:?}",
        xorshift_flags[0]
    );
    assert!(
        xorshift_flags.len() > 1,
        "alpha 0.01 over 800 seeds should flag a few by chance too"
    );
    let lcg_flags = cases[1].expected().flagged;
    assert_eq!(lcg_flags.len(), 1000, "every lcg32 seed is flagged");
    assert!(lcg_flags
        .iter()
        .all(|r| r.tests.contains(&"autocorrelation".to_string())));
    assert_eq!(cases[2].expected().flagged[0].seed, 0);

    // Re-running a command names the same job and publishes nothing new.
    let again = enqueue(&ns, &cases[0]);
    assert_eq!(again["job_id"], jobs[0].as_str(), "{again}");
    assert_eq!(again["job"], "existing", "{again}");
    assert_eq!(again["published"].as_u64(), Some(0), "{again}");
    check_job(&ns, &cases[0], &jobs[0]);
}

fn refusal(ns: &Namespace, args: &[&str], expected: &str) {
    let out = ns.producer(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{args:?} must be refused, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr.contains(expected),
        "{args:?}: stderr should mention '{expected}':\n{stderr}"
    );
}

#[test]
fn bad_analysis_input_is_refused_before_anything_is_published() {
    let ns = Namespace::new("analysis-refuse");
    let empty = ns.path("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let empty = empty.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "correlation",
                "--prng",
                "mt19937",
                "--samples",
                "64",
                "--max-lag",
                "17",
                "--seed-end",
                "100",
            ],
            "--max-lag: max_lag must be between 1 and samples/4 = 16, got 17",
        ),
        (
            &[
                "correlation",
                "--prng",
                "mt19937",
                "--bins",
                "10",
                "--seed-end",
                "100",
            ],
            "--bins applies to `analysis` only",
        ),
        (
            &["analysis", "--prng", "mersenne", "--seed-end", "100"],
            "unknown PRNG family 'mersenne'",
        ),
        (
            &["analysis", "--prng", "lcg32", "--param", "q=1"],
            "unknown parameter",
        ),
        (
            &[
                "analysis",
                "--prng",
                "mt19937",
                "--seed-start",
                "4294967000",
                "--seed-end",
                "4294968000",
            ],
            "outside the mt19937 seed space",
        ),
        (
            &[
                "correlation",
                "--prng",
                "mt19937",
                "--seed-start",
                "10",
                "--seed-end",
                "10",
            ],
            "is empty",
        ),
        (
            &["analysis", "--prng", "mt19937", "--alpha", "0.9"],
            "--alpha",
        ),
        (
            &[
                "analysis",
                "--prng",
                "mt19937",
                "--samples",
                "1000",
                "--bins",
                "500",
            ],
            "at least 5 expected values",
        ),
        (
            &["analysis", "--prng", "mt19937", "--modulus", "1"],
            "--modulus",
        ),
        (
            &["correlation", "--prng", "xorshift32", "--seeds-file", empty],
            "holds no seeds",
        ),
        (
            &["correlation", "--prng", "mt19937", "--chunk-size", "0"],
            "--chunk-size",
        ),
    ];
    for (args, expected) in cases {
        refusal(&ns, args, expected);
    }

    // Nothing reached Redis (no key of the namespace at all) or the broker.
    let client = redis::Client::open(seedq_e2e::redis_url()).unwrap();
    let mut conn = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", ns.name))
        .query(&mut conn)
        .unwrap();
    assert!(keys.is_empty(), "refused commands wrote to Redis: {keys:?}");
    let status = ns.producer_ok(&["status", "--json"]);
    let jobs: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        jobs.as_array().map(|a| a.len()),
        Some(0),
        "no job may exist after refusals: {jobs}"
    );
    let queue = Topology::new(&ns.name).seeds_queue();
    if let Some(messages) = queue_messages(&queue) {
        assert_eq!(messages, 0, "nothing may be published to {queue}");
    }
}

#[test]
fn analysis_with_more_bins_than_the_cap_is_refused_by_its_size() {
    let ns = Namespace::new("analysis-bins");
    // 2^63 and 2^62: refused arithmetically, whatever the counts.
    refusal(
        &ns,
        &[
            "analysis",
            "--prng",
            "mt19937",
            "--modulus",
            "9223372036854775808",
            "--bins",
            "4611686018427387904",
        ],
        "--bins: bins 4611686018427387904 is over the limit of 1048576 (2^20) chi-square classes",
    );
    let status = ns.producer_ok(&["status", "--json"]);
    let jobs: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(jobs.as_array().map(|a| a.len()), Some(0), "{jobs}");
}

/// Ready messages of a queue over AMQP (a passive declare: no management plugin needed), or
/// `None` when the queue does not exist.
fn queue_messages(queue: &str) -> Option<u32> {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::FieldTable;
    use lapin::{Connection, ConnectionProperties};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Connection::connect(&seedq_e2e::amqp_url(), ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let ch = conn.create_channel().await.unwrap();
        let declared = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let messages = match declared {
            Ok(q) => Some(q.message_count()),
            Err(e) => {
                assert!(
                    e.to_string().contains("NOT_FOUND"),
                    "inspecting {queue}: {e}"
                );
                None
            }
        };
        conn.close(0, "inspected".into()).await.ok();
        messages
    })
}
