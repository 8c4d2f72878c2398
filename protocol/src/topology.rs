//! RabbitMQ names and header keys for a namespace.
//!
//! ```text
//! publish (default exchange "", routing key = queue name, mandatory, confirmed, persistent)
//!   -> <ns>.seeds            quorum, x-delivery-limit, DLX <ns>.dlx      seed chunks (any slot)
//!   -> <ns>.scripts          quorum, x-delivery-limit, DLX <ns>.dlx      script jobs (any node)
//!   -> <ns>.scripts.<node>   quorum, x-delivery-limit, DLX <ns>.dlx      script jobs pinned to a node
//! retry/park: publish to exchange <ns>.delay (fanout) with routing key = the work queue name
//!   -> <ns>.delay            quorum, per-message `expiration`, DLX "" (default exchange),
//!                            dead-letter-strategy at-least-once (overflow reject-publish):
//!                            on expiry the message is dead-lettered with its ORIGINAL routing key,
//!                            i.e. straight back to its work queue, and stays in the delay queue
//!                            until the work queue has confirmed it.
//! dead letters: publish to <ns>.dlq (reason in x-seedq-error), and broker-side dead letters
//! (delivery limit exceeded) arrive through exchange <ns>.dlx (fanout)
//!   -> <ns>.dlq              quorum
//! ```
//!
//! The delay queue is a quorum queue with at-least-once dead-lettering: a message that expires
//! while its work queue is missing or has no leader is kept and re-tried by the broker (about
//! every few minutes) instead of being dropped, which a classic queue's at-most-once
//! dead-lettering would do. Queues expire only at the head, so a short delay queued behind a
//! long one waits for it: retries are delayed at most `retry.max_delay`, never lost. Earlier
//! builds used a classic `<ns>.retry` ([`Topology::legacy_retry`]), which teardown still removes.

/// Header names. Every value is an AMQP long string (numbers as decimal text), so the management
/// UI shows them as they are.
pub mod headers {
    /// Job id.
    pub const JOB: &str = "x-seedq-job";
    /// `sieve`, `correlation`, `analysis`, `scripts`.
    pub const KIND: &str = "x-seedq-kind";
    /// PRNG family name (seed work).
    pub const FAMILY: &str = "x-seedq-family";
    /// Seed range / list summary, e.g. `[0,1048576)`.
    pub const SEEDS: &str = "x-seedq-seeds";
    /// Chunk index (seed work).
    pub const CHUNK: &str = "x-seedq-chunk";
    /// Script task id (script jobs).
    pub const TASK: &str = "x-seedq-task";
    /// Attempt number, 1-based.
    pub const ATTEMPT: &str = "x-seedq-attempt";
    /// Why the message was dead-lettered (short reason class, e.g. `invalid_spec`).
    pub const ERROR: &str = "x-seedq-error";
    /// Longer human explanation next to `x-seedq-error`.
    pub const ERROR_DETAIL: &str = "x-seedq-error-detail";
    /// The work queue a dead letter or retry came from (where `dlq replay` puts it back).
    pub const SOURCE_QUEUE: &str = "x-seedq-source-queue";
    /// Node that dead-lettered or retried it.
    pub const NODE: &str = "x-seedq-node";
    /// How often the message was parked in the delay queue because Redis was unreachable (does
    /// not use up attempts; grows the parking delay).
    pub const REDIS_WAITS: &str = "x-seedq-redis-waits";
}

/// Default `x-delivery-limit` on work queues: a message redelivered this many times (consumer
/// crashes, requeues) is dead-lettered by the broker instead of looping forever.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;

/// The queue and exchange names of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The prefix of every queue and exchange name (`<ns>.seeds`, ...).
    pub namespace: String,
}

impl Topology {
    /// The names of `namespace` (not validated here: broker and store connections validate it).
    pub fn new(namespace: impl Into<String>) -> Self {
        Topology {
            namespace: namespace.into(),
        }
    }

    /// Seed chunks (quorum).
    pub fn seeds_queue(&self) -> String {
        format!("{}.seeds", self.namespace)
    }

    /// Script jobs any node may run (quorum).
    pub fn scripts_queue(&self) -> String {
        format!("{}.scripts", self.namespace)
    }

    /// Script jobs pinned to `node` (quorum).
    pub fn node_scripts_queue(&self, node: &str) -> String {
        format!("{}.scripts.{node}", self.namespace)
    }

    /// The delay queue (quorum, per-message TTL, dead-letters back to the work queue at least
    /// once).
    pub fn retry_queue(&self) -> String {
        format!("{}.delay", self.namespace)
    }

    /// Fanout exchange in front of the delay queue; publish with routing key = target queue.
    pub fn retry_exchange(&self) -> String {
        format!("{}.delay", self.namespace)
    }

    /// The classic delay queue and exchange of earlier builds (a queue's type cannot change in
    /// place): removed by teardown, never declared.
    pub fn legacy_retry(&self) -> String {
        format!("{}.retry", self.namespace)
    }

    /// Every queue of the namespace but the pinned node queues: seeds, scripts, delay, the
    /// legacy retry queue and the DLQ.
    pub fn fixed_queues(&self) -> [String; 5] {
        [
            self.seeds_queue(),
            self.scripts_queue(),
            self.retry_queue(),
            self.legacy_retry(),
            self.dlq(),
        ]
    }

    /// The node whose pinned script queue `queue` is named as (`<ns>.scripts.<node>`, `<node>`
    /// a valid identifier), if any. A name can also be another namespace's: see
    /// [`namespaces_naming`].
    pub fn node_of_scripts_queue<'q>(&self, queue: &'q str) -> Option<&'q str> {
        let node = queue
            .strip_prefix(self.namespace.as_str())?
            .strip_prefix(".scripts.")?;
        crate::validate_identifier("node name", node)
            .is_ok()
            .then_some(node)
    }

    /// Dead letters (quorum).
    pub fn dlq(&self) -> String {
        format!("{}.dlq", self.namespace)
    }

    /// Direct exchange every work-queue publish goes through (routing key = queue name), bound
    /// to the seeds, scripts and pinned script queues. Why not the default exchange: a broker
    /// user allowed to publish to the default exchange may publish to every queue of every
    /// namespace; permissions on `<ns>.work` confine a user to its namespace.
    pub fn work_exchange(&self) -> String {
        format!("{}.work", self.namespace)
    }

    /// The exchange a publish to `queue` goes through: [`Topology::work_exchange`] for the
    /// namespace's work queues, [`Topology::dlx`] for its DLQ, the default exchange otherwise.
    pub fn exchange_for(&self, queue: &str) -> String {
        if queue == self.seeds_queue()
            || queue == self.scripts_queue()
            || self.node_of_scripts_queue(queue).is_some()
        {
            self.work_exchange()
        } else if queue == self.dlq() {
            self.dlx()
        } else {
            String::new()
        }
    }

    /// Fanout exchange the work queues dead-letter into (delivery limit); bound to the DLQ.
    pub fn dlx(&self) -> String {
        format!("{}.dlx", self.namespace)
    }

    /// Work queue a script job goes to.
    pub fn script_queue_for(&self, node_pin: Option<&str>) -> String {
        match node_pin {
            Some(node) => self.node_scripts_queue(node),
            None => self.scripts_queue(),
        }
    }

    /// AMQP connection name of a consumer (`seedq-consumer@<node>`).
    pub fn consumer_connection_name(node: &str) -> String {
        format!("seedq-consumer@{node}")
    }

    /// AMQP connection name of a producer (`seedq-producer@<host>`).
    pub fn producer_connection_name(host: &str) -> String {
        format!("seedq-producer@{host}")
    }

    /// Consumer tag of a seed slot: `<node>/gpu<N>` or `<node>/cpu<N>`.
    pub fn slot_consumer_tag(node: &str, slot: &str) -> String {
        format!("{node}/{slot}")
    }

    /// Consumer tag of a node's script consumer: `<node>/scripts`.
    pub fn scripts_consumer_tag(node: &str) -> String {
        format!("{node}/scripts")
    }
}

/// Every namespace one of whose queue names `queue` is (a fixed queue or a pinned node queue).
///
/// Namespaces and node names may contain dots, so one name can belong to several: `a.scripts.seeds`
/// is the seeds queue of namespace `a.scripts` and the queue pinned to node `seeds` of namespace
/// `a`; `a.b.seeds` is only ever namespace `a.b`'s. Whoever deletes queues by name must not take
/// another namespace's along.
pub fn namespaces_naming(queue: &str) -> Vec<String> {
    const FIXED_SUFFIXES: [&str; 5] = ["seeds", "scripts", "delay", "retry", "dlq"];
    let mut owners = Vec::new();
    for (dot, _) in queue.match_indices('.') {
        let (namespace, rest) = (&queue[..dot], &queue[dot + 1..]);
        if crate::validate_identifier("namespace", namespace).is_err() {
            continue;
        }
        if FIXED_SUFFIXES.contains(&rest)
            || Topology::new(namespace)
                .node_of_scripts_queue(queue)
                .is_some()
        {
            owners.push(namespace.to_string());
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let t = Topology::new("t1");
        assert_eq!(t.seeds_queue(), "t1.seeds");
        assert_eq!(t.script_queue_for(Some("zeus")), "t1.scripts.zeus");
        assert_eq!(t.script_queue_for(None), "t1.scripts");
        assert_eq!(t.dlq(), "t1.dlq");
        assert_eq!(Topology::slot_consumer_tag("zeus", "gpu1"), "zeus/gpu1");
        assert_eq!(t.work_exchange(), "t1.work");
        for q in [
            t.seeds_queue(),
            t.scripts_queue(),
            t.node_scripts_queue("rig-1.lab"),
        ] {
            assert_eq!(t.exchange_for(&q), "t1.work", "{q}");
        }
        assert_eq!(t.exchange_for(&t.dlq()), "t1.dlx");
        assert_eq!(t.exchange_for("t2.seeds"), "");
        assert_eq!(t.exchange_for(&t.retry_queue()), "");
    }

    #[test]
    fn queue_names_tell_their_namespaces() {
        let a = Topology::new("a");
        assert_eq!(
            a.node_of_scripts_queue("a.scripts.rig-1.lab"),
            Some("rig-1.lab")
        );
        assert_eq!(a.node_of_scripts_queue("a.scripts"), None);
        assert_eq!(a.node_of_scripts_queue("a.b.scripts.x"), None);
        assert_eq!(a.node_of_scripts_queue("ab.scripts.x"), None);
        assert_eq!(namespaces_naming("a.b.seeds"), vec!["a.b"]);
        assert_eq!(namespaces_naming("a.scripts.x"), vec!["a"]);
        // Node `seeds` of `a`, and the seeds queue of `a.scripts`.
        assert_eq!(namespaces_naming("a.scripts.seeds"), vec!["a", "a.scripts"]);
        // Node `scripts.x` of `a`, and node `x` of `a.scripts`.
        assert_eq!(
            namespaces_naming("a.scripts.scripts.x"),
            vec!["a", "a.scripts"]
        );
        assert!(namespaces_naming("a.other").is_empty());
        for q in a.fixed_queues() {
            assert_eq!(namespaces_naming(&q), vec!["a"], "{q}");
        }
    }

    /// `config/definitions.json` with the namespace filled in as `scripts/init-secrets.sh` does.
    fn definitions(ns: &str) -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/definitions.json");
        let text = std::fs::read_to_string(path)
            .unwrap()
            .replace("@NS_RE@", &ns.replace('.', "\\\\."))
            .replace("@NS@", ns);
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn the_delivery_limit_policy_covers_every_work_queue_and_nothing_else() {
        // config/definitions.json is what the deployment's broker loads (rendered per namespace
        // by scripts/init-secrets.sh); its pattern must match the names this module makes (the
        // pinned per-node script queues included) and must leave the retry and dead-letter
        // queues alone (a limit there would drop messages).
        for ns in ["seedq", "seedq-lab", "seedq.v2"] {
            let defs = definitions(ns);
            let policy = defs["policies"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["definition"].get("delivery-limit").is_some())
                .unwrap();
            let pattern = regex::Regex::new(policy["pattern"].as_str().unwrap()).unwrap();
            let t = Topology::new(ns);
            for q in [
                t.seeds_queue(),
                t.scripts_queue(),
                t.node_scripts_queue("zeus"),
                t.node_scripts_queue("rig-1.lab"),
            ] {
                assert!(pattern.is_match(&q), "{q} has no delivery limit");
            }
            for q in [t.retry_queue(), t.legacy_retry(), t.dlq()] {
                assert!(!pattern.is_match(&q), "{q} must not get a delivery limit");
            }
            // Another namespace's queues are not this one's.
            assert!(!pattern.is_match(&format!("{ns}x.seeds")));
        }
    }

    #[test]
    fn role_permissions_stay_inside_the_namespace() {
        let ns = "seedq.v2";
        let defs = definitions(ns);
        let t = Topology::new(ns);
        let other = Topology::new("seedq");
        let perm = |user: &str, kind: &str| {
            let p = defs["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["user"] == format!("{ns}-{user}"))
                .unwrap()[kind]
                .as_str()
                .unwrap()
                .to_string();
            regex::Regex::new(&p).unwrap()
        };
        // The producer publishes through the work exchange and reads dead letters; it cannot
        // consume work or configure anything.
        assert!(perm("producer", "write").is_match(&t.work_exchange()));
        assert!(!perm("producer", "write").is_match("amq.default"));
        assert!(!perm("producer", "read").is_match(&t.seeds_queue()));
        assert!(!perm("producer", "configure").is_match(&t.seeds_queue()));
        // The consumer consumes work, configures only pinned queues (never the shared ones).
        let consumer_configure = perm("consumer", "configure");
        assert!(consumer_configure.is_match(&t.node_scripts_queue("zeus")));
        for q in [t.seeds_queue(), t.scripts_queue(), t.dlq(), t.retry_queue()] {
            assert!(!consumer_configure.is_match(&q), "{q}");
        }
        assert!(perm("consumer", "read").is_match(&t.seeds_queue()));
        for x in [t.retry_exchange(), t.dlx(), t.work_exchange()] {
            assert!(perm("consumer", "write").is_match(&x), "{x}");
        }
        // Nothing of another namespace, for any role.
        for user in ["producer", "consumer", "operator"] {
            for kind in ["configure", "write", "read"] {
                let p = perm(user, kind);
                for name in [
                    other.seeds_queue(),
                    other.work_exchange(),
                    other.dlq(),
                    other.node_scripts_queue("zeus"),
                    "amq.default".to_string(),
                ] {
                    assert!(!p.is_match(&name), "{user} {kind} {name}");
                }
            }
        }
    }
}
