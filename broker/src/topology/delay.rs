//! Delayed jobs on the broker's own timers: a job due later is published to a holding queue
//! per delay, `NS.delay.<ms>`, whose messages expire after exactly that long (`x-message-ttl`)
//! and are dead-lettered into the jobs exchange, where they route as if published then.
//!
//! The job's own routing key travels in the message's `CC` header: dead-lettering routes a
//! message by its original routing keys (its own, the holding queue's delay, and its `CC`
//! header's), and the jobs exchange binds only the job's. Every message of a holding queue has
//! the same time to live, so its head is always the next due: nothing waits behind a later one.
//! No process polls or holds a timer. It does not decide when a job is due (the producer and
//! the runner's retries do).

use std::time::Duration;

use super::Topology;
use crate::message::{CC_HEADER, ExchangeKind, HeaderValue, Message, QueueOptions};
use crate::{Confirm, Connection, Result};

/// Delays are rounded up to this step, so that jobs queued for nearly the same time share a
/// holding queue: a job runs at most this much later than asked, never earlier.
pub const DELAY_STEP_MS: u64 = 100;

/// How long an unused holding queue outlives its last message's delay before the broker
/// deletes it (`x-expires`; declaring it again before each publish renews it).
const HOLDING_QUEUE_SPARE: Duration = Duration::from_secs(600);

/// The holding delay of a job due at `due_ms`, seen at `now_ms`: `None` when it is due already.
pub fn holding_delay(due_ms: u64, now_ms: u64) -> Option<Duration> {
    let wait = due_ms.checked_sub(now_ms).filter(|wait| *wait > 0)?;
    Some(Duration::from_millis(wait.div_ceil(DELAY_STEP_MS).saturating_mul(DELAY_STEP_MS)))
}

impl Topology {
    pub(super) fn delays_exchange(&self) -> String {
        format!("{}.delays", self.ns)
    }

    /// The holding queue of one delay.
    pub fn delay_queue(&self, delay: Duration) -> String {
        format!("{}.delay.{}", self.ns, delay.as_millis())
    }

    /// Declare the holding queue of `delay`: durable (a broker restart keeps a delayed job), its
    /// messages dead-lettered into the jobs exchange when their time is up.
    async fn declare_delay(&self, conn: &Connection, delay: Duration) -> Result<(String, String)> {
        let exchange = self.delays_exchange();
        conn.declare_exchange(&exchange, ExchangeKind::Direct, true).await?;
        let queue = self.delay_queue(delay);
        let options = QueueOptions {
            durable: true,
            message_ttl: Some(delay),
            dead_letter_exchange: Some(self.jobs_exchange()),
            expires: Some(delay.saturating_add(HOLDING_QUEUE_SPARE)),
            ..QueueOptions::default()
        };
        conn.declare_queue(&queue, &options).await?;
        let key = delay.as_millis().to_string();
        conn.bind_queue(&queue, &exchange, &key).await?;
        Ok((exchange, key))
    }

    /// Publish a job message (mandatory, confirmed later) to go out on `routing_key` of the jobs
    /// exchange after `delay`.
    pub(super) async fn send_delayed(
        &self,
        conn: &Connection,
        mut message: Message,
        routing_key: &str,
        delay: Duration,
    ) -> Result<Confirm> {
        let (exchange, key) = self.declare_delay(conn, delay).await?;
        message.properties.headers.insert(CC_HEADER.to_owned(), HeaderValue::List(vec![routing_key.to_owned()]));
        conn.publish(&exchange, &key, &message, true).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_round_up_to_the_step_and_a_due_job_has_none() {
        assert_eq!(holding_delay(10_000, 10_000), None);
        assert_eq!(holding_delay(9_000, 10_000), None);
        assert_eq!(holding_delay(10_001, 10_000), Some(Duration::from_millis(100)));
        assert_eq!(holding_delay(10_100, 10_000), Some(Duration::from_millis(100)));
        assert_eq!(holding_delay(40_050, 10_000), Some(Duration::from_millis(30_100)));
    }
}
