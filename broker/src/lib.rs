#![warn(missing_docs)]
//! seedq-broker: the RabbitMQ side of seedq (lapin 4).
//!
//! # API
//!
//! ```text
//! Broker::connect(url, connection_name, namespace) -> Broker   named connection + a confirm-mode
//!                                                              publisher channel
//! Endpoints::new(urls)                          the broker's addresses (cluster nodes), in order
//! Broker::connect_any(&Endpoints, name, ns)     one pass over them, from the last good address
//! Broker::connect_with_retry(&Endpoints, name, ns, give_up_after)   passes with backoff while
//!                                                                   every address is down
//!   .address()                                the URL connected to, password redacted
//!   .declare_topology(&BrokerSettings)        durable quorum work queues (x-delivery-limit, DLX), the
//!                                             retry exchange/queue, DLX + DLQ. Idempotent.
//!   .declare_node_scripts_queue(node, &BrokerSettings)          `<ns>.scripts.<node>` (pinned jobs)
//!   .ensure_topology / .ensure_node_scripts_queue   the same, a permission refusal tolerated
//!   .publish_chunk(&Job, &ChunkMessage)       -> <ns>.seeds, confirmed
//!   .publish_chunks(&Job, &[ChunkMessage])    many, confirms pipelined in windows of PUBLISH_WINDOW
//!   .publish_script(&ScriptJob)               -> <ns>.scripts or <ns>.scripts.<node>
//!   .publish_raw(queue, body, &Headers)       anything (tests publish malformed payloads with it)
//!   .publish_retry(queue, body, &Headers, delay_ms)   via the delay queue, back to `queue` after delay
//!   .publish_dead_letter(source_queue, body, &Headers, reason, detail)   -> <ns>.dlq with x-seedq-error
//!   .queue_depth(queue) -> QueueDepth { messages, consumers }
//!   .channel() -> lapin::Channel               for consumers (qos, basic_consume) and operator tools
//!   .purge_namespace(&[extra node names])      delete the namespace's queues and exchanges (tests)
//! chunk_headers(&Job, &ChunkMessage), script_headers(&ScriptJob) -> Headers
//! headers_of(&props), delivery_count(&props), is_broker_header(name)   reading deliveries
//! headers_of(&BasicProperties) -> Headers       read a delivery's headers back as strings
//! ```
//!
//! Every publish is persistent (delivery mode 2), `mandatory`, and waits for the publisher
//! confirm: a nack, or an ack that comes with a returned (unroutable) message, is an error
//! ([`BrokerError::Unroutable`], [`BrokerError::Nacked`]); nothing is dropped silently.

//! Publishes to work queues go through the namespace's `<ns>.work` direct exchange (routing key =
//! queue name), dead letters through `<ns>.dlx`, so that broker permissions on those names confine
//! a user to its namespace (the default exchange reaches every queue). Retries go through the
//! `<ns>.delay` fanout exchange so that the delay queue can dead-letter each message back to the
//! queue named by its own routing key (see `seedq_protocol::topology`).
//!
//! With a job key ([`Broker::with_job_key`]) every publish carries `x-seedq-signature`.
//!
//! Header values are AMQP long strings (readable in the management UI without a decoder).
//!
//! Reconnection is the caller's loop: a dropped connection surfaces as errors from the channel
//! and consumers (every wait on the broker ends with an error once its connection is no longer
//! open, even where lapin would leave it pending, see `lifeline`); build a new `Broker` (e.g.
//! with [`Broker::connect_with_retry`]) and subscribe again. Deliveries that were in flight are
//! redelivered by the broker. Given the addresses of several cluster nodes ([`Endpoints`]), the
//! new connection goes to the first one that answers, starting from the one that worked last: a
//! node that dies takes its connections with it, and its clients fail over to the others.
//!
//! A nacked publish also retires the publisher channel: the next publish goes out on a fresh
//! one. RabbitMQ 3.10 nacks every later publish to a quorum queue on a channel whose first
//! publish to it came while the queue had no leader (its node had just died), for as long as the
//! channel lives, while a new channel publishes fine once a survivor leads (without the renewal,
//! the producer in the cluster test of `e2e/tests/broker_failover.rs` never gets its window
//! through). The nacked publish itself is the caller's to repeat, later: repeated at once, it
//! could meet the same election and poison the new channel too.

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties, ExchangeKind};

use seedq_protocol::signing::SIGNATURE_HEADER;
use seedq_protocol::topology::headers as h;
use seedq_protocol::{BrokerSettings, ChunkMessage, Job, ScriptJob, Topology};
use seedq_protocol::{CaCert, JobKey};

use lifeline::Lifeline;

mod endpoints;
mod inbound;
mod lifeline;
mod tls;

pub use endpoints::{connect_backoff, Endpoints, CONNECT_TIMEOUT};
pub use inbound::{Inbound, Reader, Subscription};

/// Message headers as plain strings (name -> value).
pub type Headers = BTreeMap<String, String>;

/// Outstanding confirms per window in [`Broker::publish_chunks`].
pub const PUBLISH_WINDOW: usize = 2000;

/// Errors from the broker layer.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// An AMQP operation failed (connection, channel, declare, publish, confirm).
    #[error("RabbitMQ {context} failed: {source} (is RabbitMQ running and reachable at the --amqp-url?)")]
    Amqp {
        /// The operation, e.g. `declare queue seedq.seeds`.
        context: String,
        /// lapin's error.
        source: lapin::Error,
    },
    /// A mandatory publish came back: no queue is bound to its routing key.
    #[error("publish to '{queue}' was returned as unroutable ({reply}): the queue does not exist; declare the topology first (or check the node name of a pinned job)")]
    Unroutable {
        /// The queue the message was published to.
        queue: String,
        /// The broker's reply code and text, e.g. `312 NO_ROUTE`.
        reply: String,
    },
    /// The broker nacked a publish: it did not take responsibility for the message.
    #[error("RabbitMQ refused (nacked) a publish to '{queue}': the broker could not store it (a disk or memory alarm, or a quorum queue without a leader for a moment)")]
    Nacked {
        /// The queue the message was published to.
        queue: String,
    },
    /// The namespace given to [`Broker::connect`] is not a valid identifier.
    #[error(transparent)]
    Protocol(seedq_protocol::ProtocolError),
    /// A confirm came back as not requested: the publisher channel is not in confirm mode.
    #[error("publisher confirms are not enabled on this channel (internal error)")]
    ConfirmsNotEnabled,
    /// No broker address was given (an empty `--amqp-url` list).
    #[error("no RabbitMQ address given: --amqp-url takes one URL or a comma-separated list")]
    NoAddress,
    /// Every address of the list failed; `tried` names each (password redacted) with its error.
    #[error("RabbitMQ unreachable at every address: {tried} (is RabbitMQ running and reachable at the --amqp-url?)")]
    Unreachable {
        /// `url: error; url: error...`
        tried: String,
        /// Every address failed for a reason waiting does not fix ([`BrokerError::is_permanent`]).
        permanent: bool,
    },
    /// The TLS handshake of an `amqps://` connection refused the server's certificate (unknown
    /// CA, a host name the certificate does not name, expired). Waiting does not change it.
    #[error("RabbitMQ at {address}: the server's TLS certificate is not trusted ({detail}): pass the CA certificate that signed it with --tls-ca-file (SEEDQ_TLS_CA_FILE), and check that the URL's host is one the certificate names")]
    Certificate {
        /// The URL, password redacted.
        address: String,
        /// The TLS library's reason, scrubbed of the password.
        detail: String,
    },
    /// An `amqps://` connection whose server does not speak TLS on that port (a plain AMQP
    /// listener answers the handshake with AMQP or not at all).
    #[error("RabbitMQ at {address} did not complete a TLS handshake ({detail}): that port does not seem to speak TLS: use amqp:// for a plain listener (5672 by default), or the broker's TLS port (5671 by default) with amqps://")]
    TlsHandshake {
        /// The URL, password redacted.
        address: String,
        /// The client's reason, scrubbed of the password.
        detail: String,
    },
    /// A plain `amqp://` connection that the server dropped or answered with something that is
    /// not AMQP before the handshake: what a TLS-only listener does with plain text.
    #[error("RabbitMQ at {address} did not answer in AMQP ({detail}): if that port is a TLS listener (5671 by default), use an amqps:// URL (with --tls-ca-file (SEEDQ_TLS_CA_FILE) for a private CA)")]
    NotAmqp {
        /// The URL, password redacted.
        address: String,
        /// The client's reason, scrubbed of the password.
        detail: String,
    },
    /// An address did not take the connection in time.
    #[error("connecting to RabbitMQ at {address} took longer than {after:?} (for an amqps:// URL: is the port a TLS listener?)")]
    ConnectTimeout {
        /// The URL, password redacted.
        address: String,
        /// The limit.
        after: Duration,
    },
    /// An ack or requeue could not be delivered: the channel closed while the message was being
    /// worked on, and the broker will hand it out again.
    #[error("{what} on {queue} not delivered: the channel is closed; the broker will redeliver the message")]
    NotSettled {
        /// `ack` or `requeue`.
        what: String,
        /// The queue of the message.
        queue: String,
    },
}

impl BrokerError {
    /// The broker refused the operation for lack of permission (`403 ACCESS_REFUSED`): the
    /// user's configure, write or read permission does not cover the name. Waiting or retrying
    /// does not change that.
    pub fn is_access_refused(&self) -> bool {
        match self {
            BrokerError::Amqp { source, .. } => source.to_string().contains("ACCESS_REFUSED"),
            _ => false,
        }
    }

    /// A connection error that trying again will not fix: a bad namespace, or a TLS mismatch
    /// (an untrusted certificate, TLS against a plain port or plain against a TLS port). A
    /// command stops at once on these instead of retrying for a minute.
    pub fn is_permanent(&self) -> bool {
        match self {
            BrokerError::Protocol(_)
            | BrokerError::Certificate { .. }
            | BrokerError::TlsHandshake { .. }
            | BrokerError::NotAmqp { .. } => true,
            BrokerError::Unreachable { permanent, .. } => *permanent,
            _ => false,
        }
    }
}

/// `Result` with [`BrokerError`] as the default error.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

fn amqp(context: impl Into<String>) -> impl FnOnce(lapin::Error) -> BrokerError {
    let context = context.into();
    move |source| BrokerError::Amqp { context, source }
}

/// Messages and consumers of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDepth {
    /// Ready messages (not counting unacked deliveries).
    pub messages: u32,
    /// Consumers subscribed to the queue.
    pub consumers: u32,
}

/// One named AMQP connection with a confirm-mode publisher channel, for one namespace.
pub struct Broker {
    connection: Connection,
    /// Ends every wait on `connection` once it is no longer open.
    lifeline: Lifeline,
    /// The confirm-mode channel publishes go out on (replaced after a nack, see the module doc).
    publisher: std::sync::Mutex<lapin::Channel>,
    topology: Topology,
    connection_name: String,
    /// The URL connected to, password redacted.
    address: String,
    /// Signs every publish when set (see `seedq_protocol::signing`).
    job_key: Option<JobKey>,
}

impl Broker {
    /// Connects once. `connection_name` shows in the management UI
    /// (`seedq-consumer@<node>`, `seedq-producer@<host>`). An `amqps://` URL trusts the
    /// system's roots only; see [`Broker::connect_with_ca`].
    pub async fn connect(url: &str, connection_name: &str, namespace: &str) -> Result<Broker> {
        Broker::connect_with_ca(url, connection_name, namespace, None).await
    }

    /// [`Broker::connect`], an `amqps://` URL also trusting the certificates of `ca`
    /// (`--tls-ca-file`). A TLS mismatch or an untrusted certificate is a
    /// [`BrokerError::Certificate`], [`BrokerError::TlsHandshake`] or [`BrokerError::NotAmqp`]
    /// saying which URL or file to change.
    pub async fn connect_with_ca(
        url: &str,
        connection_name: &str,
        namespace: &str,
        ca: Option<&CaCert>,
    ) -> Result<Broker> {
        seedq_protocol::validate_identifier("namespace", namespace)
            .map_err(BrokerError::Protocol)?;
        let props = ConnectionProperties::default().with_connection_name(connection_name.into());
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: ca.map(|ca| ca.pem().to_string()),
        };
        let runtime = lapin::runtime::default_runtime().map_err(amqp("connect"))?;
        let connection = Connection::connect_with_config(url, props, tls, runtime)
            .await
            .map_err(|source| tls::classify_connect_error(url, source))?;
        let lifeline = Lifeline::of(&connection);
        let publisher = confirm_channel(&connection, &lifeline).await?;
        Ok(Broker {
            connection,
            lifeline,
            publisher: std::sync::Mutex::new(publisher),
            topology: Topology::new(namespace),
            connection_name: connection_name.to_string(),
            address: seedq_telemetry::redact(url),
            job_key: None,
        })
    }

    /// Signs every message this connection publishes with `key` from now on (`None`: unsigned).
    /// A signature header already on the headers given is always replaced, so a republished
    /// message is signed by the node that republishes it or not at all.
    pub fn with_job_key(mut self, key: Option<JobKey>) -> Broker {
        self.job_key = key;
        self
    }

    /// The key publishes are signed with, if any.
    pub fn job_key(&self) -> Option<&JobKey> {
        self.job_key.as_ref()
    }

    /// The queue and exchange names of this broker's namespace.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The underlying AMQP connection.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    /// The name this connection shows in the management UI.
    pub fn connection_name(&self) -> &str {
        &self.connection_name
    }

    /// The URL this connection went to, password redacted (which node of a cluster).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// True while the connection is open.
    pub fn is_connected(&self) -> bool {
        self.connection.status().connected()
    }

    /// True while the connection and its publisher channel are open: after a publish error, false
    /// means the error was the connection's (publish again on a new one), true that it was the
    /// message's or the queue's.
    pub fn is_usable(&self) -> bool {
        self.is_connected() && self.current_publisher().status().connected()
    }

    fn current_publisher(&self) -> lapin::Channel {
        self.publisher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The channel to publish on: the current one, or a fresh one when it has been closed (a
    /// channel error) on a connection that still works.
    async fn publisher(&self) -> Result<lapin::Channel> {
        let current = self.current_publisher();
        if current.status().connected() || !self.is_connected() {
            return Ok(current);
        }
        self.renew_publisher(&current).await
    }

    /// Replaces `retired` with a new confirm channel, unless another publish already did; returns
    /// the channel to use now.
    async fn renew_publisher(&self, retired: &lapin::Channel) -> Result<lapin::Channel> {
        let fresh = confirm_channel(&self.connection, &self.lifeline).await?;
        let replaced = {
            let mut current = self.publisher.lock().unwrap_or_else(|p| p.into_inner());
            if current.id() == retired.id() {
                Some(std::mem::replace(&mut *current, fresh.clone()))
            } else {
                None
            }
        };
        match replaced {
            Some(old) => {
                tracing::debug!(
                    old = old.id(),
                    new = fresh.id(),
                    "publisher channel renewed"
                );
                self.lifeline.close_channel(&old, "renewed").await;
                Ok(fresh)
            }
            None => {
                self.lifeline.close_channel(&fresh, "not needed").await;
                Ok(self.current_publisher())
            }
        }
    }

    /// Retires `channel` after it nacked a publish (see the module doc); best effort.
    async fn after_confirm(&self, channel: &lapin::Channel, result: Result<()>) -> Result<()> {
        if matches!(result, Err(BrokerError::Nacked { .. })) && self.is_connected() {
            if let Err(e) = self.renew_publisher(channel).await {
                tracing::warn!(error = %e, "could not open a new publisher channel after a nack");
            }
        }
        result
    }

    /// A new channel on this connection (consumers: one per slot).
    pub async fn channel(&self) -> Result<lapin::Channel> {
        self.lifeline
            .bound(self.connection.create_channel())
            .await
            .map_err(amqp("channel open"))
    }

    /// Closes the connection (reply 200), waiting at most a few seconds for the broker's answer
    /// (a connection the server already closed may never give one, see `lifeline`).
    pub async fn close(&self) {
        let bye = self.connection.close(200, "bye".into());
        let _ = tokio::time::timeout(Duration::from_secs(5), bye).await;
    }

    // ----- topology -------------------------------------------------------------------------

    fn work_queue_args(&self, settings: &BrokerSettings) -> FieldTable {
        let mut args = quorum_args();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(settings.delivery_limit.min(i32::MAX as u32) as i32),
        );
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(self.topology.dlx().into()),
        );
        args
    }

    /// Declares the namespace's queues and exchanges. Idempotent; every process calls it with
    /// the same settings (arguments that differ from an existing queue's are refused by RabbitMQ
    /// with PRECONDITION_FAILED).
    pub async fn declare_topology(&self, settings: &BrokerSettings) -> Result<()> {
        let t = &self.topology;
        let ch = self.channel().await?;
        // Dead letters.
        self.declare_exchange(&ch, &t.dlx(), ExchangeKind::Fanout)
            .await?;
        self.declare_queue(&ch, &t.dlq(), quorum_args()).await?;
        self.bind_queue(&ch, &t.dlq(), &t.dlx(), "").await?;
        // Work queues, behind the namespace's work exchange.
        self.declare_exchange(&ch, &t.work_exchange(), ExchangeKind::Direct)
            .await?;
        for q in [t.seeds_queue(), t.scripts_queue()] {
            self.declare_work_queue(&ch, &q, settings).await?;
        }
        // Retry: fanout exchange -> quorum delay queue that dead-letters to the default exchange
        // with the message's own routing key (= the work queue it came from), at least once: an
        // expired message whose work queue is briefly gone or leaderless waits instead of being
        // dropped (at-least-once needs overflow reject-publish).
        self.declare_exchange(&ch, &t.retry_exchange(), ExchangeKind::Fanout)
            .await?;
        let mut retry_args = quorum_args();
        retry_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        retry_args.insert(
            "x-dead-letter-strategy".into(),
            AMQPValue::LongString("at-least-once".into()),
        );
        retry_args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        self.declare_queue(&ch, &t.retry_queue(), retry_args)
            .await?;
        self.bind_queue(&ch, &t.retry_queue(), &t.retry_exchange(), "")
            .await?;
        self.lifeline.close_channel(&ch, "declared").await;
        Ok(())
    }

    /// Declares `<ns>.scripts.<node>` (pinned script jobs). Idempotent.
    pub async fn declare_node_scripts_queue(
        &self,
        node: &str,
        settings: &BrokerSettings,
    ) -> Result<()> {
        let q = self.topology.node_scripts_queue(node);
        let ch = self.channel().await?;
        self.declare_work_queue(&ch, &q, settings).await?;
        self.lifeline.close_channel(&ch, "declared").await;
        Ok(())
    }

    /// A durable work queue bound to the work exchange under its own name.
    async fn declare_work_queue(
        &self,
        ch: &lapin::Channel,
        queue: &str,
        settings: &BrokerSettings,
    ) -> Result<()> {
        self.declare_queue(ch, queue, self.work_queue_args(settings))
            .await?;
        self.bind_queue(ch, queue, &self.topology.work_exchange(), queue)
            .await
    }

    async fn declare_exchange(
        &self,
        ch: &lapin::Channel,
        exchange: &str,
        kind: ExchangeKind,
    ) -> Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let declare = ch.exchange_declare(exchange.into(), kind, durable, FieldTable::default());
        self.lifeline
            .bound(declare)
            .await
            .map_err(amqp(format!("declare exchange {exchange}")))
    }

    async fn declare_queue(
        &self,
        ch: &lapin::Channel,
        queue: &str,
        args: FieldTable,
    ) -> Result<()> {
        let declare = ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args);
        self.lifeline
            .bound(declare)
            .await
            .map(drop)
            .map_err(amqp(format!("declare queue {queue}")))
    }

    async fn bind_queue(
        &self,
        ch: &lapin::Channel,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<()> {
        let bind = ch.queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        );
        self.lifeline
            .bound(bind)
            .await
            .map_err(amqp(format!("bind {queue}")))
    }

    /// [`Broker::declare_topology`] for processes that only need the topology to exist: a broker
    /// user without configure permission (the least-privilege producer and consumer roles, see
    /// README "Security") cannot declare, and then the topology an administrator declared
    /// (`seedq-producer declare`) is used as it is; a part that is missing makes the first
    /// publish or consume fail, naming it. `Ok(false)` when the declare was refused.
    pub async fn ensure_topology(&self, settings: &BrokerSettings) -> Result<bool> {
        match self.declare_topology(settings).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_access_refused() => {
                tracing::debug!(error = %e, "not allowed to declare the topology; using the declared one");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// [`Broker::declare_node_scripts_queue`], tolerating a refusal like
    /// [`Broker::ensure_topology`].
    pub async fn ensure_node_scripts_queue(
        &self,
        node: &str,
        settings: &BrokerSettings,
    ) -> Result<bool> {
        match self.declare_node_scripts_queue(node, settings).await {
            Ok(()) => Ok(true),
            Err(e) if e.is_access_refused() => {
                tracing::debug!(error = %e, node, "not allowed to declare the node's pinned queue; using the declared one");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes the namespace's queues (including `<ns>.scripts.<node>` for `nodes`) and
    /// exchanges. For tests.
    pub async fn purge_namespace(&self, nodes: &[&str]) -> Result<()> {
        let t = &self.topology;
        let ch = self.channel().await?;
        let mut queues = t.fixed_queues().to_vec();
        queues.extend(nodes.iter().map(|n| t.node_scripts_queue(n)));
        for q in queues {
            self.lifeline
                .bound(ch.queue_delete(q.as_str().into(), QueueDeleteOptions::default()))
                .await
                .map_err(amqp(format!("delete queue {q}")))?;
        }
        for x in [
            t.retry_exchange(),
            t.legacy_retry(),
            t.dlx(),
            t.work_exchange(),
        ] {
            self.lifeline
                .bound(ch.exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default()))
                .await
                .map_err(amqp(format!("delete exchange {x}")))?;
        }
        self.lifeline.close_channel(&ch, "purged").await;
        Ok(())
    }

    /// Ready messages and consumers of a queue (passive declare; error if it does not exist).
    pub async fn queue_depth(&self, queue: &str) -> Result<QueueDepth> {
        // A failed passive declare closes its channel, so use a throwaway one.
        let ch = self.channel().await?;
        let q = self
            .lifeline
            .bound(ch.queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            ))
            .await
            .map_err(amqp(format!("inspect queue {queue}")))?;
        let depth = QueueDepth {
            messages: q.message_count(),
            consumers: q.consumer_count(),
        };
        self.lifeline.close_channel(&ch, "inspected").await;
        Ok(depth)
    }

    // ----- publishing -----------------------------------------------------------------------

    async fn start_publish(
        &self,
        channel: &lapin::Channel,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        headers: &Headers,
        expiration_ms: Option<u64>,
    ) -> Result<lapin::PublisherConfirm> {
        let mut headers = without_broker_headers(headers);
        headers.remove(SIGNATURE_HEADER);
        if let Some(key) = &self.job_key {
            headers.insert(SIGNATURE_HEADER.to_string(), key.sign(body));
        }
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_headers(to_table(&headers));
        if let Some(ms) = expiration_ms {
            props = props.with_expiration(ms.max(1).to_string().into());
        }
        let publish = channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            props,
        );
        self.lifeline
            .bound(publish)
            .await
            .map_err(amqp(format!("publish to {routing_key}")))
    }

    async fn finish_publish(&self, confirm: lapin::PublisherConfirm, queue: &str) -> Result<()> {
        let confirmation = self
            .lifeline
            .bound(confirm)
            .await
            .map_err(amqp(format!("publisher confirm for {queue}")))?;
        check_confirmation(confirmation, queue)
    }

    async fn publish(
        &self,
        exchange: &str,
        queue: &str,
        body: &[u8],
        headers: &Headers,
        expiration_ms: Option<u64>,
    ) -> Result<()> {
        let channel = self.publisher().await?;
        let confirm = self
            .start_publish(&channel, exchange, queue, body, headers, expiration_ms)
            .await?;
        let result = self.finish_publish(confirm, queue).await;
        self.after_confirm(&channel, result).await
    }

    /// Publishes any body to a queue (default exchange), confirmed and mandatory.
    pub async fn publish_raw(&self, queue: &str, body: &[u8], headers: &Headers) -> Result<()> {
        let exchange = self.topology.exchange_for(queue);
        self.publish(&exchange, queue, body, headers, None).await
    }

    /// Publishes one chunk of `job` to `<ns>.seeds`.
    pub async fn publish_chunk(&self, job: &Job, msg: &ChunkMessage) -> Result<()> {
        self.publish_raw(
            &self.topology.seeds_queue(),
            &msg.to_json(),
            &chunk_headers(job, msg),
        )
        .await
    }

    /// Publishes many chunks, keeping up to [`PUBLISH_WINDOW`] confirms outstanding. Returns
    /// after every one is confirmed; on error some may have been published (republishing them is
    /// harmless: results are applied once).
    pub async fn publish_chunks(&self, job: &Job, msgs: &[ChunkMessage]) -> Result<()> {
        let batch: Vec<(&Job, &ChunkMessage)> = msgs.iter().map(|m| (job, m)).collect();
        self.publish_chunk_batch(&batch).await
    }

    /// Publishes chunks of several jobs in the given order (the scheduler interleaves jobs), as
    /// [`Broker::publish_chunks`] does for one.
    pub async fn publish_chunk_batch(&self, batch: &[(&Job, &ChunkMessage)]) -> Result<()> {
        let queue = self.topology.seeds_queue();
        let exchange = self.topology.work_exchange();
        for window in batch.chunks(PUBLISH_WINDOW) {
            let channel = self.publisher().await?;
            let mut pending = Vec::with_capacity(window.len());
            for (job, msg) in window {
                let body = msg.to_json();
                let headers = chunk_headers(job, msg);
                pending.push(
                    self.start_publish(&channel, &exchange, &queue, &body, &headers, None)
                        .await?,
                );
            }
            // Every confirm is awaited, so that a nack anywhere in the window is seen.
            let mut result = Ok(());
            for confirm in pending {
                let confirmed = self.finish_publish(confirm, &queue).await;
                if result.is_ok() {
                    result = confirmed;
                }
            }
            self.after_confirm(&channel, result).await?;
        }
        Ok(())
    }

    /// Publishes a script job to the shared scripts queue, or to `<ns>.scripts.<node>` when it
    /// is pinned (that queue must have been declared: [`Broker::declare_node_scripts_queue`]).
    pub async fn publish_script(&self, job: &ScriptJob) -> Result<()> {
        let queue = self.topology.script_queue_for(job.node.as_deref());
        self.publish_raw(&queue, &job.to_json(), &script_headers(job))
            .await
    }

    /// Publishes `body` to the delay queue; after `delay_ms` it is dead-lettered back to
    /// `target_queue`. Use for transient-failure retries (bump the attempt in body and headers).
    pub async fn publish_retry(
        &self,
        target_queue: &str,
        body: &[u8],
        headers: &Headers,
        delay_ms: u64,
    ) -> Result<()> {
        let mut headers = headers.clone();
        headers.insert(h::SOURCE_QUEUE.to_string(), target_queue.to_string());
        let exchange = self.topology.retry_exchange();
        let channel = self.publisher().await?;
        let confirm = self
            .start_publish(
                &channel,
                &exchange,
                target_queue,
                body,
                &headers,
                Some(delay_ms),
            )
            .await?;
        let result = self
            .finish_publish(confirm, &self.topology.retry_queue())
            .await;
        self.after_confirm(&channel, result).await
    }

    /// Publishes `body` to `<ns>.dlq` with `x-seedq-error: reason`, the detail, and the queue it
    /// came from (where `dlq replay` puts it back).
    pub async fn publish_dead_letter(
        &self,
        source_queue: &str,
        body: &[u8],
        headers: &Headers,
        reason: seedq_protocol::FailureReason,
        detail: &str,
    ) -> Result<()> {
        let mut headers = headers.clone();
        headers.insert(h::ERROR.to_string(), reason.as_str().to_string());
        headers.insert(h::ERROR_DETAIL.to_string(), truncate(detail, 1000));
        headers.insert(h::SOURCE_QUEUE.to_string(), source_queue.to_string());
        self.publish_raw(&self.topology.dlq(), body, &headers).await
    }
}

/// The arguments every queue of the topology starts from: a quorum queue.
fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args
}

async fn confirm_channel(connection: &Connection, lifeline: &Lifeline) -> Result<lapin::Channel> {
    let channel = lifeline
        .bound(connection.create_channel())
        .await
        .map_err(amqp("channel open"))?;
    lifeline
        .bound(channel.confirm_select(ConfirmSelectOptions::default()))
        .await
        .map_err(amqp("confirm.select"))?;
    Ok(channel)
}

fn check_confirmation(confirmation: Confirmation, queue: &str) -> Result<()> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(BrokerError::Unroutable {
                queue: queue.to_string(),
                reply: format!("{} {}", returned.reply_code, returned.reply_text),
            })
        }
        Confirmation::Nack(None) => Err(BrokerError::Nacked {
            queue: queue.to_string(),
        }),
        Confirmation::NotRequested => Err(BrokerError::ConfirmsNotEnabled),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The descriptive headers of a chunk message.
pub fn chunk_headers(job: &Job, msg: &ChunkMessage) -> Headers {
    let mut headers = Headers::new();
    headers.insert(h::JOB.into(), msg.job_id.clone());
    headers.insert(h::KIND.into(), msg.kind.as_str().into());
    if let Some(family) = job.spec.family_name() {
        headers.insert(h::FAMILY.into(), family);
    }
    headers.insert(h::CHUNK.into(), msg.chunk.to_string());
    headers.insert(h::SEEDS.into(), msg.seeds_label());
    headers.insert(h::ATTEMPT.into(), msg.attempt.to_string());
    headers
}

/// The descriptive headers of a script job message.
pub fn script_headers(job: &ScriptJob) -> Headers {
    let mut headers = Headers::new();
    headers.insert(h::JOB.into(), job.batch_id.clone());
    headers.insert(h::KIND.into(), "scripts".into());
    headers.insert(h::TASK.into(), job.task_id.clone());
    headers.insert(h::ATTEMPT.into(), job.attempt.to_string());
    if let Some(node) = &job.node {
        headers.insert(h::NODE.into(), node.clone());
    }
    headers
}

/// Converts string headers to an AMQP table of long strings.
pub fn to_table(headers: &Headers) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        if k.len() <= 255 {
            table.insert(
                ShortString::from(k.as_str()),
                AMQPValue::LongString(LongString::from(v.as_str())),
            );
        }
    }
    table
}

/// Headers the broker writes on delivery or dead-lettering. A message seedq republishes (retry,
/// parking, dead letter, replay) starts afresh: a copied `x-delivery-count` would survive the
/// republish and make the new message look nearly exhausted.
pub fn is_broker_header(name: &str) -> bool {
    name == "x-delivery-count"
        || name == "x-received-from"
        || name.starts_with("x-death")
        || name.starts_with("x-first-death")
        || name.starts_with("x-last-death")
}

fn without_broker_headers(headers: &Headers) -> Headers {
    headers
        .iter()
        .filter(|(k, _)| !is_broker_header(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// How many times the broker has already handed this message out and seen it come back
/// unsettled (a consumer crashed, its channel closed, or it requeued): quorum queues count these
/// in `x-delivery-count` and dead-letter the message past the queue's delivery limit.
pub fn delivery_count(props: &BasicProperties) -> u64 {
    let Some(table) = props.headers() else {
        return 0;
    };
    match table.inner().get("x-delivery-count") {
        Some(AMQPValue::LongLongInt(n)) => (*n).max(0) as u64,
        Some(AMQPValue::LongInt(n)) => (*n).max(0) as u64,
        Some(AMQPValue::LongUInt(n)) => u64::from(*n),
        Some(AMQPValue::ShortInt(n)) => (*n).max(0) as u64,
        Some(AMQPValue::ShortUInt(n)) => u64::from(*n),
        Some(AMQPValue::ShortShortInt(n)) => (*n).max(0) as u64,
        Some(AMQPValue::ShortShortUInt(n)) => u64::from(*n),
        _ => 0,
    }
}

/// Reads a delivery's headers as strings (numbers formatted, nested tables and arrays as JSON-ish
/// debug text). Broker-added headers such as `x-death` are included.
pub fn headers_of(props: &BasicProperties) -> Headers {
    let mut out = Headers::new();
    if let Some(table) = props.headers() {
        for (k, v) in table.inner() {
            out.insert(k.to_string(), value_text(v));
        }
    }
    out
}

fn value_text(v: &AMQPValue) -> String {
    match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_a_table() {
        let mut hs = Headers::new();
        hs.insert(h::JOB.into(), "job-1".into());
        hs.insert(h::ERROR.into(), "invalid_spec".into());
        let props = BasicProperties::default().with_headers(to_table(&hs));
        assert_eq!(headers_of(&props), hs);
    }

    #[test]
    fn republished_messages_drop_the_brokers_headers_and_delivery_counts_are_read() {
        let mut table = FieldTable::default();
        table.insert("x-delivery-count".into(), AMQPValue::LongLongInt(19));
        table.insert(h::JOB.into(), AMQPValue::LongString("job-1".into()));
        let props = BasicProperties::default().with_headers(table);
        assert_eq!(delivery_count(&props), 19);
        assert_eq!(delivery_count(&BasicProperties::default()), 0);
        let mut hs = headers_of(&props);
        hs.insert("x-death".into(), "[...]".into());
        hs.insert("x-first-death-reason".into(), "delivery_limit".into());
        let kept = without_broker_headers(&hs);
        assert_eq!(kept.keys().collect::<Vec<_>>(), vec![h::JOB], "{kept:?}");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h...");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
