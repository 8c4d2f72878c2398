//! The receiving side of the broker: a [`Subscription`] (one channel, its prefetch, one
//! consumer) yields [`Inbound`] deliveries that know how to settle themselves, and a [`Reader`]
//! takes messages one at a time for operator tools (`dlq`). Consumers settle only through these,
//! so lapin stays inside this crate.
//!
//! Settling is checked: an ack or requeue that the channel can no longer deliver (the connection
//! died while the work ran) is an error, never a silent success, because the broker will hand the
//! message out again and the caller must know its settlement did not happen. Every wait here
//! ends once the connection is no longer open (`crate::lifeline`).

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use crate::lifeline::{closed, Lifeline};
use crate::{amqp, delivery_count, headers_of, Broker, BrokerError, Headers, Result};

/// One consumer on one queue, on a channel of its own with prefetch `prefetch`.
pub struct Subscription {
    channel: Channel,
    lifeline: Lifeline,
    consumer: Consumer,
    queue: String,
    tag: String,
}

impl Subscription {
    /// Opens a channel, sets its prefetch and starts consuming `queue` as `tag`.
    pub async fn open(broker: &Broker, queue: &str, tag: &str, prefetch: u16) -> Result<Self> {
        let channel = broker.channel().await?;
        let lifeline = broker.lifeline.clone();
        let consumer = consume(&channel, &lifeline, queue, tag, prefetch).await?;
        Ok(Subscription {
            channel,
            lifeline,
            consumer,
            queue: queue.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The queue consumed.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next delivery; `None` when the consumer ended (cancelled by us or by the broker,
    /// e.g. because the queue was deleted); `Err` when the channel or connection failed.
    pub async fn next(&mut self) -> Option<Result<Inbound>> {
        // lapin does not always end a consumer's stream when the server closes the connection.
        let next = self
            .lifeline
            .until_closed(self.consumer.next())
            .await
            .unwrap_or(Some(Err(closed())));
        match next? {
            Ok(delivery) => Some(Ok(Inbound {
                delivery,
                queue: self.queue.clone(),
                lifeline: self.lifeline.clone(),
                _channel: self.channel.clone(),
            })),
            Err(e) => Some(Err(BrokerError::Amqp {
                context: format!("consume {}", self.queue),
                source: e,
            })),
        }
    }

    /// Stops new deliveries; what was already sent still arrives through [`Subscription::next`],
    /// which then returns `None`.
    pub async fn cancel(&self) -> Result<()> {
        let cancel = self
            .channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default());
        self.lifeline
            .bound(cancel)
            .await
            .map_err(amqp(format!("cancel consumer {}", self.tag)))
    }

    /// Consumes again on the same channel with a new prefetch (after [`Subscription::cancel`]
    /// and the old consumer's end): prefetch applies to consumers started after `basic.qos`.
    pub async fn resume(&mut self, prefetch: u16) -> Result<()> {
        self.consumer = consume(
            &self.channel,
            &self.lifeline,
            &self.queue,
            &self.tag,
            prefetch,
        )
        .await?;
        Ok(())
    }

    /// Closes the channel: every delivery not settled yet goes back to the queue.
    pub async fn close(self, why: &str) {
        self.lifeline.close_channel(&self.channel, why).await;
    }
}

async fn consume(
    channel: &Channel,
    lifeline: &Lifeline,
    queue: &str,
    tag: &str,
    prefetch: u16,
) -> Result<Consumer> {
    lifeline
        .bound(channel.basic_qos(prefetch.max(1), BasicQosOptions::default()))
        .await
        .map_err(amqp(format!("set prefetch {prefetch} for {queue}")))?;
    let consume = channel.basic_consume(
        queue.into(),
        tag.into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    );
    lifeline
        .bound(consume)
        .await
        .map_err(amqp(format!("consume {queue}")))
}

/// One delivery. It holds its channel open: lapin closes a channel when its last handle drops,
/// which would return every delivery still being worked on to the queue.
pub struct Inbound {
    delivery: Delivery,
    queue: String,
    lifeline: Lifeline,
    _channel: Channel,
}

impl Inbound {
    /// The message body.
    pub fn body(&self) -> &[u8] {
        &self.delivery.data
    }

    /// The queue it came from.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// Its headers as strings, broker-added ones included.
    pub fn headers(&self) -> Headers {
        headers_of(&self.delivery.properties)
    }

    /// How often the broker handed it out before and saw it come back unsettled (quorum
    /// queues' `x-delivery-count`).
    pub fn delivery_count(&self) -> u64 {
        delivery_count(&self.delivery.properties)
    }

    /// Whether the broker delivered it before (to anyone).
    pub fn redelivered(&self) -> bool {
        self.delivery.redelivered
    }

    /// Acks; an error when the ack could not reach the broker (it will redeliver).
    pub async fn ack(&self) -> Result<()> {
        checked(
            self.lifeline
                .bound(self.delivery.acker.ack(BasicAckOptions::default()))
                .await,
            "ack",
            &self.queue,
        )
    }

    /// Returns it to the head of its queue. On a quorum queue this counts as a delivery towards
    /// the queue's delivery limit: use it only when the message may be at fault (a crash-like
    /// return), and republish for returns that are not.
    pub async fn requeue(&self) -> Result<()> {
        checked(
            self.lifeline
                .bound(self.delivery.acker.nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                }))
                .await,
            "requeue",
            &self.queue,
        )
    }
}

fn checked(result: lapin::Result<bool>, what: &str, queue: &str) -> Result<()> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(BrokerError::NotSettled {
            what: what.to_string(),
            queue: queue.to_string(),
        }),
        Err(e) => Err(BrokerError::Amqp {
            context: format!("{what} on {queue}"),
            source: e,
        }),
    }
}

/// Takes messages one at a time (`basic.get`) on a channel of its own: what is not acked stays
/// with the reader until [`Reader::give_back_all`] or [`Reader::close`] (so one pass never sees a
/// message twice).
pub struct Reader {
    channel: Channel,
    lifeline: Lifeline,
}

impl Broker {
    /// A [`Reader`] for operator tools.
    pub async fn reader(&self) -> Result<Reader> {
        Ok(Reader {
            channel: self.channel().await?,
            lifeline: self.lifeline.clone(),
        })
    }
}

impl Reader {
    /// The next message of `queue`, `None` when it has no more ready ones.
    pub async fn get(&self, queue: &str) -> Result<Option<Inbound>> {
        let get = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default());
        let message = self
            .lifeline
            .bound(get)
            .await
            .map_err(amqp(format!("read {queue}")))?;
        Ok(message.map(|m| Inbound {
            delivery: m.delivery,
            queue: queue.to_string(),
            lifeline: self.lifeline.clone(),
            _channel: self.channel.clone(),
        }))
    }

    /// Returns every message taken and not acked to its queue.
    pub async fn give_back_all(&self) -> Result<()> {
        let nack = self.channel.basic_nack(
            0,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        );
        self.lifeline
            .bound(nack)
            .await
            .map_err(amqp("give back unacked messages"))
    }

    /// Deletes every ready message of `queue`; returns how many.
    pub async fn purge(&self, queue: &str) -> Result<u32> {
        let purge = self
            .channel
            .queue_purge(queue.into(), QueuePurgeOptions::default());
        self.lifeline
            .bound(purge)
            .await
            .map_err(amqp(format!("purge {queue}")))
    }

    /// Closes the channel (unacked messages go back).
    pub async fn close(self) {
        self.lifeline.close_channel(&self.channel, "done").await;
    }
}
