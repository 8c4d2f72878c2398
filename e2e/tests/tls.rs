//! TLS end to end: a private RabbitMQ and a private Redis whose only ports speak TLS, with a CA
//! and server certificate made here at test time (rcgen), run a real sieve job over `amqps://`
//! and `rediss://` with `--tls-ca-file` (as `SEEDQ_TLS_CA_FILE`), and the results are the
//! reference's. Then every way of getting TLS wrong fails within a bounded time with a message
//! that names the problem and the fix, and never a password: plain URLs at the TLS ports, the
//! servers' certificates checked against another CA or against the system's roots, a key given
//! as the CA file, and a Redis that takes connections and never answers (`status` used to hang
//! there without a word).

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use seedq_e2e::{Namespace, PrivateRabbit, PrivateRedis};
use seedq_kernels::cpu::CpuBackend;
use seedq_kernels::{
    Direction, Family, FamilyConfig, SeedSet, SieveBackend, SieveSpec, SkipMode, Threshold,
};

/// The Redis password: long enough to be scrubbed, distinctive enough to search for.
const REDIS_PASSWORD: &str = "tls-r3dis-Secret-77";

/// Writes `ca.pem`, `server.pem` and `server.key` into `dir`: a CA, and a certificate it signed
/// for 127.0.0.1 and localhost (the addresses the tests connect to).
fn make_certificates(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "seedq e2e test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca, &ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = server.signed_by(&server_key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
}

/// One draw mod 2, threshold 1: lcg32's low bit alternates, so every other seed survives.
fn loose_spec() -> SieveSpec {
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
        direction: Direction::Forward,
        skip_mode: SkipMode::Constant,
    }
}

/// Runs the producer with `args` and returns its output and how long it took.
fn timed(ns: &Namespace, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let out = ns.producer(args);
    (out, started.elapsed())
}

/// The producer failed within `limit`, saying each of `needles`, and quoting no password.
fn fails_clearly(what: &str, (out, took): (Output, Duration), limit: Duration, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{what}: should fail, exited {} after {took:?}:\n{stderr}",
        out.status
    );
    assert!(
        took < limit,
        "{what}: took {took:?} (limit {limit:?}):\n{stderr}"
    );
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "{what}: the message should say {needle:?}:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains(REDIS_PASSWORD),
        "{what}: a password in the message:\n{stderr}"
    );
    eprintln!("{what} ({took:?}): {}", stderr.trim_end());
}

#[test]
fn a_job_runs_over_amqps_and_rediss_and_tls_mistakes_fail_clearly() {
    let certs = std::env::temp_dir().join(format!("seedq-e2e-tls-{}", std::process::id()));
    make_certificates(&certs);
    let other_ca = certs.join("other");
    make_certificates(&other_ca);
    let Some(redis) = PrivateRedis::start_tls(Some(("default", REDIS_PASSWORD)), &certs) else {
        seedq_e2e::skip(
            "a_job_runs_over_amqps_and_rediss_and_tls_mistakes_fail_clearly",
            "redis-server is not installed",
        );
        return;
    };
    let rabbit = match PrivateRabbit::start_tls(&certs) {
        Ok(r) => r,
        Err(e) => {
            seedq_e2e::skip(
                "a_job_runs_over_amqps_and_rediss_and_tls_mistakes_fail_clearly",
                &e,
            );
            return;
        }
    };
    assert!(rabbit.url().starts_with("amqps://"), "{}", rabbit.url());
    assert!(redis.url().starts_with("rediss://"), "{}", redis.url());

    let mut ns = Namespace::new("tls");
    ns.amqp_url = rabbit.url();
    ns.redis_url = redis.url();
    ns.tls_ca_file = Some(certs.join("ca.pem"));

    // A real job over TLS only: enqueue, one consumer, wait, exact results.
    let seeds = 20_000u64;
    let draws = ns.path("draws.json");
    std::fs::write(&draws, "[1]").unwrap();
    let job = ns.sieve(&[
        "--prng",
        "lcg32",
        "--draws",
        draws.to_str().unwrap(),
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
        "--chunk-size",
        "5000",
    ]);
    ns.start_consumer("tls-n1", 1, 1);
    ns.wait(&job, 180);
    let status = ns.status(&job);
    let expected: Vec<u64> = CpuBackend::new(1)
        .sieve(
            &loose_spec(),
            &SeedSet::Range {
                start: 0,
                end: seeds,
            },
        )
        .unwrap()
        .survivors
        .iter()
        .map(|s| s.seed)
        .collect();
    assert_eq!(
        status["survivors"].as_u64(),
        Some(expected.len() as u64),
        "status: {status}"
    );
    let got: Vec<u64> = ns
        .results(&job)
        .iter()
        .map(|r| r["seed"].as_u64().expect("a seed"))
        .collect();
    assert_eq!(got, expected);
    let log = ns.consumer(0).log_text();
    assert!(
        !log.contains(REDIS_PASSWORD),
        "a password in the log:\n{log}"
    );

    // What an operator can get wrong, each bounded and named. Each variant runs in a namespace
    // of its own settings (same servers), never torn down through the broken settings.
    let limit = Duration::from_secs(40);
    let with = |edit: &dyn Fn(&mut Namespace)| {
        let mut bad = Namespace::new("tls-bad");
        bad.amqp_url = rabbit.url();
        bad.redis_url = redis.url();
        bad.tls_ca_file = Some(certs.join("ca.pem"));
        edit(&mut bad);
        bad
    };
    let plain_amqp = rabbit.url().replacen("amqps://", "amqp://", 1);
    let plain_redis = redis.url().replacen("rediss://", "redis://", 1);

    let ns_plain_amqp = with(&|n| n.amqp_url = plain_amqp.clone());
    fails_clearly(
        "amqp:// at the TLS port",
        timed(&ns_plain_amqp, &["declare"]),
        limit,
        &["amqps://"],
    );
    let ns_plain_redis = with(&|n| n.redis_url = plain_redis.clone());
    fails_clearly(
        "redis:// at the TLS port",
        timed(&ns_plain_redis, &["status"]),
        limit,
        &["rediss://", "redis://default:***@127.0.0.1"],
    );
    let ns_other_ca = with(&|n| n.tls_ca_file = Some(other_ca.join("ca.pem")));
    fails_clearly(
        "amqps:// with another CA",
        timed(&ns_other_ca, &["declare"]),
        limit,
        &["certificate", "--tls-ca-file"],
    );
    fails_clearly(
        "rediss:// with another CA",
        timed(&ns_other_ca, &["status"]),
        limit,
        &[
            "certificate",
            "--tls-ca-file",
            "rediss://default:***@127.0.0.1",
        ],
    );
    let ns_no_ca = with(&|n| n.tls_ca_file = None);
    fails_clearly(
        "rediss:// trusting only the system's roots",
        timed(&ns_no_ca, &["status"]),
        limit,
        &["certificate", "--tls-ca-file"],
    );
    fails_clearly(
        "amqps:// trusting only the system's roots",
        timed(&ns_no_ca, &["declare"]),
        limit,
        &["certificate", "--tls-ca-file"],
    );
    let ns_key_as_ca = with(&|n| n.tls_ca_file = Some(certs.join("server.key")));
    fails_clearly(
        "a key as the CA file",
        timed(&ns_key_as_ca, &["status"]),
        Duration::from_secs(5),
        &["server.key", "no PEM certificate"],
    );
    // A Redis that takes the connection and never says a word (a hung server, a TLS port that
    // waits for a handshake): `status` gives up within the store's bound, naming the address.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "redis://default:{REDIS_PASSWORD}@127.0.0.1:{}/",
        silent.local_addr().unwrap().port()
    );
    let ns_silent = with(&|n| n.redis_url = silent_url.clone());
    fails_clearly(
        "a Redis that never answers",
        timed(&ns_silent, &["status"]),
        Duration::from_secs(25),
        &[
            "no answer within",
            "redis://default:***@127.0.0.1",
            "rediss://",
        ],
    );
    // Their teardown goes through the good settings, and there is nothing to tear down.
    for mut bad in [
        ns_plain_amqp,
        ns_plain_redis,
        ns_other_ca,
        ns_no_ca,
        ns_key_as_ca,
        ns_silent,
    ] {
        bad.amqp_url = rabbit.url();
        bad.redis_url = redis.url();
        bad.tls_ca_file = Some(certs.join("ca.pem"));
        drop(bad);
    }
    drop(silent);
    drop(ns);
    drop(rabbit);
    drop(redis);
    let _ = std::fs::remove_dir_all(&certs);
}

/// An empty `SEEDQ_TLS_CA_FILE` (what an env file writes for an unused setting) is no CA file,
/// not a missing value.
#[test]
fn an_empty_ca_file_variable_means_none() {
    let ns = Namespace::new("tls-empty-ca");
    let out = ns
        .producer_cmd(&["status"])
        .env("SEEDQ_TLS_CA_FILE", "")
        .output()
        .expect("run seedq-producer");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
