//! Least privilege end to end: the broker users and Redis ACL users that `scripts/init-secrets.sh`
//! renders from `config/definitions.json` and `config/redis-users.acl`, loaded into a private
//! RabbitMQ node and a private Redis (never the shared services). Two namespaces, A and B:
//!
//! - with A's role users (admin declares, producer publishes, consumer consumes) a sieve runs to
//!   its exact end;
//! - A's consumer cannot delete A's queues or exchanges, A's producer cannot consume A's work;
//! - A's users cannot read or write anything of B, at the broker or in Redis;
//! - Redis refuses the dangerous commands (FLUSHALL, KEYS, CONFIG) to every role but admin, and
//!   the `default` user is off.
//!
//! What RabbitMQ's permissions cannot express: purging a queue needs the same `read` permission
//! as consuming it, so a consumer may purge the work queues it consumes (it could drain them by
//! consuming anyway); deleting needs `configure`, which it lacks.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use seedq_e2e::{skip, Namespace, PrivateRabbit, PrivateRedis};

const TEST: &str = "role_users_work_and_are_confined_to_their_namespace";

/// Renders one namespace's secrets into `dir` with the private services' addresses.
fn init_secrets(dir: &Path, namespace: &str, amqp_port: u16, redis_port: u16) {
    let out =
        std::process::Command::new(seedq_e2e::workspace_root().join("scripts/init-secrets.sh"))
            .args(["--out", dir.to_str().unwrap(), "--namespace", namespace])
            .args(["--env-file", "-"])
            .env("SEEDQ_SECRETS_AMQP_HOST", "127.0.0.1")
            .env("SEEDQ_SECRETS_AMQP_PORT", amqp_port.to_string())
            .env("SEEDQ_SECRETS_REDIS_HOST", "127.0.0.1")
            .env("SEEDQ_SECRETS_REDIS_PORT", redis_port.to_string())
            .output()
            .expect("run scripts/init-secrets.sh");
    assert!(
        out.status.success(),
        "init-secrets.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn secret(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// The broker's refusal of one operation, as lapin reports it (`Ok` when it was allowed).
fn amqp_op(url: &str, op: &str, name: &str) -> Result<(), String> {
    use lapin::options::*;
    use lapin::types::FieldTable;
    use lapin::{BasicProperties, Connection, ConnectionProperties};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
        let result = match op {
            "delete_queue" => ch
                .queue_delete(name.into(), QueueDeleteOptions::default())
                .await
                .map(|_| ()),
            "delete_exchange" => ch
                .exchange_delete(name.into(), ExchangeDeleteOptions::default())
                .await
                .map(|_| ()),
            "consume" => ch
                .basic_consume(
                    name.into(),
                    "seedq-e2e-probe".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map(|_| ()),
            "get" => ch
                .basic_get(name.into(), BasicGetOptions::default())
                .await
                .map(|_| ()),
            // Publish through exchange `name` with routing key `<exchange's namespace>.seeds`;
            // a refusal closes the channel, which the confirm then reports.
            publish if publish.starts_with("publish:") => {
                let routing_key = &publish["publish:".len()..];
                ch.confirm_select(ConfirmSelectOptions::default())
                    .await
                    .map_err(|e| e.to_string())?;
                match ch
                    .basic_publish(
                        name.into(),
                        routing_key.into(),
                        BasicPublishOptions::default(),
                        b"{}",
                        BasicProperties::default(),
                    )
                    .await
                {
                    Ok(confirm) => confirm.await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            other => panic!("unknown probe {other}"),
        };
        let _ = conn.close(200, "probe".into()).await;
        result.map_err(|e| e.to_string())
    })
}

fn assert_refused(what: &str, result: Result<(), String>) {
    match result {
        Ok(()) => panic!("{what} was allowed"),
        Err(e) => assert!(
            e.contains("ACCESS_REFUSED") || e.contains("403"),
            "{what}: {e}"
        ),
    }
}

/// A Redis command as a role user: `Err` with the server's error text when refused.
fn redis_op(url: &str, args: &[&str]) -> Result<redis::Value, String> {
    let mut conn = redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .map_err(|e| e.to_string())?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query::<redis::Value>(&mut conn)
        .map_err(|e| e.to_string())
}

fn assert_noperm(what: &str, result: Result<redis::Value, String>) {
    match result {
        Ok(v) => panic!("{what} was allowed: {v:?}"),
        Err(e) => assert!(
            e.contains("NOPERM") || e.contains("no permissions"),
            "{what}: {e}"
        ),
    }
}

#[test]
fn role_users_work_and_are_confined_to_their_namespace() {
    let rabbit = match PrivateRabbit::start() {
        Ok(r) => r,
        Err(reason) => return skip(TEST, &reason),
    };
    let mut ns_a = Namespace::new("roles-a");
    let mut ns_b = Namespace::new("roles-b");
    let redis_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let (dir_a, dir_b) = (ns_a.path("secrets"), ns_a.path("secrets-b"));
    init_secrets(&dir_a, &ns_a.name, rabbit.amqp_port(), redis_port);
    init_secrets(&dir_b, &ns_b.name, rabbit.amqp_port(), redis_port);

    // Both namespaces' users in one ACL file (the `default` line once).
    let acl = ns_a.path("users.acl");
    let b_users: String = std::fs::read_to_string(dir_b.join("redis-users.acl"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("user default "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        &acl,
        std::fs::read_to_string(dir_a.join("redis-users.acl")).unwrap() + &b_users,
    )
    .unwrap();
    let admin_user = format!("{}-admin", ns_a.name);
    let admin_pw = secret(&dir_a, "admin.password");
    // PrivateRedis picks its own port: the URL files name `redis_port`, so rewrite them.
    let Some(redis) = PrivateRedis::start_with(
        Some((&admin_user, &admin_pw)),
        &["--aclfile", acl.to_str().unwrap()],
    ) else {
        return skip(TEST, "redis-server is not installed");
    };
    let fix_port =
        |url: String| url.replace(&format!(":{redis_port}/"), &format!(":{}/", redis.port()));

    // The broker users and permissions, as the deployment's broker loads them at boot.
    for dir in [&dir_a, &dir_b] {
        rabbit
            .mgmt()
            .post(
                "/api/definitions",
                &std::fs::read_to_string(dir.join("rabbitmq-definitions.json")).unwrap(),
            )
            .expect("load the rendered definitions");
    }
    let url = |dir: &Path, role: &str, kind: &str| {
        let text = secret(dir, &format!("{role}.{kind}-url"));
        if kind == "redis" {
            fix_port(text)
        } else {
            text
        }
    };

    // The administrator declares A's topology; everything else runs as the roles.
    ns_a.amqp_url = url(&dir_a, "admin", "amqp");
    ns_a.redis_url = url(&dir_a, "admin", "redis");
    ns_a.producer_ok(&["declare"]);
    ns_b.amqp_url = url(&dir_b, "admin", "amqp");
    ns_b.redis_url = url(&dir_b, "admin", "redis");
    ns_b.producer_ok(&["declare"]);
    // A producer may not declare: `declare` says so.
    let out = ns_a
        .producer_cmd(&["declare"])
        .env("SEEDQ_AMQP_URL", url(&dir_a, "producer", "amqp"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("ACCESS_REFUSED"),
        "{text}"
    );

    // A's consumer, as the consumer role.
    let (admin_amqp, admin_redis) = (ns_a.amqp_url.clone(), ns_a.redis_url.clone());
    ns_a.amqp_url = url(&dir_a, "consumer", "amqp");
    ns_a.redis_url = url(&dir_a, "consumer", "redis");
    ns_a.start_consumer("roles-node", 1, 1);
    ns_a.amqp_url = admin_amqp;
    ns_a.redis_url = admin_redis;

    // A sieve, as the producer role, runs to its exact end.
    let producer = |args: &[&str]| {
        let out = ns_a
            .producer_cmd(args)
            .env("SEEDQ_AMQP_URL", url(&dir_a, "producer", "amqp"))
            .env("SEEDQ_REDIS_URL", url(&dir_a, "producer", "redis"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}\nconsumer log: {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(ns_a.path("roles-node.log")).unwrap_or_default()
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let draws = seedq_e2e::write_json(&ns_a, "d.json", &json!([1, 2, 3]));
    let sieve: serde_json::Value = serde_json::from_str(&producer(&[
        "sieve",
        "--json",
        "--prng",
        "xorshift32",
        "--draws",
        &draws,
        "--threshold",
        "1",
        "--seed-start",
        "1",
        "--seed-end",
        "5001",
        "--chunk-size",
        "1000",
    ]))
    .unwrap();
    let job = sieve["job_id"].as_str().unwrap().to_string();
    producer(&["wait", &job, "--timeout", "120"]);
    let status: serde_json::Value =
        serde_json::from_str(&producer(&["status", &job, "--json"])).unwrap();
    assert_eq!(status["seeds_done"].as_u64(), Some(5000), "{status}");
    producer(&["dlq", "list"]);

    // The broker: what each role may not do.
    let (a, b) = (
        seedq_protocol::Topology::new(&ns_a.name),
        seedq_protocol::Topology::new(&ns_b.name),
    );
    let a_consumer = url(&dir_a, "consumer", "amqp");
    let a_producer = url(&dir_a, "producer", "amqp");
    let a_operator = url(&dir_a, "operator", "amqp");
    let mut probes: BTreeMap<String, Result<(), String>> = BTreeMap::new();
    for q in [a.seeds_queue(), a.scripts_queue(), a.dlq(), a.retry_queue()] {
        probes.insert(
            format!("A consumer deletes {q}"),
            amqp_op(&a_consumer, "delete_queue", &q),
        );
    }
    for x in [a.work_exchange(), a.dlx()] {
        probes.insert(
            format!("A consumer deletes exchange {x}"),
            amqp_op(&a_consumer, "delete_exchange", &x),
        );
    }
    for q in [a.seeds_queue(), a.scripts_queue()] {
        probes.insert(
            format!("A producer consumes {q}"),
            amqp_op(&a_producer, "consume", &q),
        );
        probes.insert(
            format!("A producer gets from {q}"),
            amqp_op(&a_producer, "get", &q),
        );
        probes.insert(
            format!("A operator gets from {q}"),
            amqp_op(&a_operator, "get", &q),
        );
    }
    for user in [&a_producer, &a_consumer] {
        probes.insert(
            format!("A user {} publishes to B", user.split(':').nth(1).unwrap()),
            amqp_op(
                user,
                &format!("publish:{}", b.seeds_queue()),
                &b.work_exchange(),
            ),
        );
        probes.insert(
            format!(
                "A user {} publishes through the default exchange",
                user.split(':').nth(1).unwrap()
            ),
            amqp_op(user, &format!("publish:{}", b.seeds_queue()), ""),
        );
        probes.insert(
            format!(
                "A user {} reads B's dead letters",
                user.split(':').nth(1).unwrap()
            ),
            amqp_op(user, "get", &b.dlq()),
        );
    }
    probes.insert(
        "A consumer consumes B's seeds".into(),
        amqp_op(&a_consumer, "consume", &b.seeds_queue()),
    );
    for (what, result) in probes {
        assert_refused(&what, result);
    }
    // ...and what the roles do need still works (a probe that can pass).
    assert!(amqp_op(&a_producer, "get", &a.dlq()).is_ok());
    assert!(amqp_op(
        &a_producer,
        &format!("publish:{}", a.scripts_queue()),
        &a.work_exchange()
    )
    .is_ok());

    // Redis: namespaces apart, no dangerous command, no default user.
    let a_consumer_redis = url(&dir_a, "consumer", "redis");
    let a_producer_redis = url(&dir_a, "producer", "redis");
    let a_operator_redis = url(&dir_a, "operator", "redis");
    let b_key = format!("{}:jobs", ns_b.name);
    for (who, user_url) in [
        ("consumer", &a_consumer_redis),
        ("producer", &a_producer_redis),
        ("operator", &a_operator_redis),
    ] {
        assert_noperm(
            &format!("A {who} reads B"),
            redis_op(user_url, &["ZRANGE", &b_key, "0", "-1"]),
        );
        assert_noperm(
            &format!("A {who} writes B"),
            redis_op(user_url, &["SET", &format!("{}:x", ns_b.name), "1"]),
        );
        assert_noperm(
            &format!("A {who} FLUSHALL"),
            redis_op(user_url, &["FLUSHALL"]),
        );
        assert_noperm(&format!("A {who} KEYS"), redis_op(user_url, &["KEYS", "*"]));
        assert_noperm(
            &format!("A {who} CONFIG"),
            redis_op(user_url, &["CONFIG", "SET", "maxmemory", "1"]),
        );
        assert!(
            redis_op(
                user_url,
                &["ZRANGE", &format!("{}:jobs", ns_a.name), "0", "-1"]
            )
            .is_ok(),
            "{who} reads A"
        );
    }
    assert_noperm(
        "A operator writes A",
        redis_op(
            &a_operator_redis,
            &["SET", &format!("{}:x", ns_a.name), "1"],
        ),
    );
    let anonymous = redis_op(
        &format!("redis://127.0.0.1:{}/", redis.port()),
        &["GET", "x"],
    );
    assert!(
        anonymous
            .as_ref()
            .is_err_and(|e| e.contains("NOAUTH") || e.contains("Authentication")),
        "{anonymous:?}"
    );
    let _ = std::fs::remove_dir_all(&dir_b);
    drop(ns_b);
    drop(ns_a);
    drop(redis);
    drop(rabbit);
}
