//! Decisions, messages (the outbox), delivery attempts, escalations,
//! suppressions and cancel keys.

use sqlx::FromRow;

use super::exec::Exec;
use super::{NewDecision, Store, StoreError, new_id, now_ms};

/// A message: one notification on its way, or the record of why it is not.
#[derive(Debug, Clone, FromRow)]
pub struct MessageRow {
    /// Message id (also its idempotency key towards transports).
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// The event that caused it.
    pub event_id: String,
    /// The decision that asked for it.
    pub decision_id: String,
    /// Order id.
    pub order_id: String,
    /// Customer id.
    pub customer_id: String,
    /// Channel chosen by policy.
    pub channel: String,
    /// Template name.
    pub template: String,
    /// Requested locale.
    pub locale: Option<String>,
    /// `transactional` or `marketing`.
    pub category: String,
    /// Priority.
    pub priority: String,
    /// Dedupe key.
    pub dedupe_key: Option<String>,
    /// Cancel key.
    pub cancel_key: Option<String>,
    /// Template variables, JSON.
    pub data: String,
    /// `scheduled`, `sending`, `sent`, `failed`, `suppressed`, `cancelled`, `held`.
    pub status: String,
    /// Why it has this status (policy verdict, failure).
    pub status_reason: Option<String>,
    /// When it is due, ms.
    pub send_at: i64,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// The rendered message, JSON, once rendered.
    pub rendered: Option<String>,
    /// Explicit recipient (agent notifications); none: the customer.
    pub recipient: Option<String>,
    /// The agent key that approved a held message.
    pub approved_by: Option<String>,
    /// Created, ms.
    pub created_at: i64,
    /// Last change, ms.
    pub updated_at: i64,
    /// Channels still to try, in order, if this one fails for good (JSON
    /// list).
    pub fallback_channels: String,
    /// The provider's id of the sent message (Twilio's SID), named by its
    /// status callbacks.
    pub provider_id: Option<String>,
}

/// One message of an order's history ([`Store::order_history`]).
#[derive(Debug, Clone, FromRow)]
pub struct HistoryRow {
    /// Tenant.
    pub tenant_id: String,
    /// Order.
    pub order_id: String,
    /// Template name.
    pub template: String,
    /// Channel.
    pub channel: String,
    /// When it is or was due, ms.
    pub send_at: i64,
    /// Created, ms.
    pub created_at: i64,
}

pub(super) const MESSAGE_COLUMNS: &str = "id, tenant_id, event_id, decision_id, order_id, customer_id, channel, template, locale,
    category, priority, dedupe_key, cancel_key, data, status, status_reason, send_at, attempts, rendered,
    recipient, approved_by, created_at, updated_at, fallback_channels, provider_id";

/// A message to create.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Event.
    pub event_id: &'a str,
    /// Decision.
    pub decision_id: &'a str,
    /// Order.
    pub order_id: &'a str,
    /// Customer.
    pub customer_id: &'a str,
    /// Channel.
    pub channel: String,
    /// Template.
    pub template: &'a str,
    /// Locale.
    pub locale: Option<&'a str>,
    /// Category.
    pub category: String,
    /// Priority.
    pub priority: String,
    /// Dedupe key.
    pub dedupe_key: Option<&'a str>,
    /// Cancel key.
    pub cancel_key: Option<&'a str>,
    /// Template variables, JSON.
    pub data: String,
    /// Initial status.
    pub status: &'a str,
    /// Why.
    pub status_reason: Option<&'a str>,
    /// Due time, ms.
    pub send_at: i64,
    /// Explicit recipient (agent notifications).
    pub recipient: Option<String>,
}

/// Filters for listing messages.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter<'a> {
    /// Only this order.
    pub order_id: Option<&'a str>,
    /// Only this status.
    pub status: Option<&'a str>,
    /// Only this channel.
    pub channel: Option<&'a str>,
    /// Cursor: ids before this one.
    pub before: Option<&'a str>,
}

/// A delivery attempt.
#[derive(Debug, Clone, FromRow, serde::Serialize)]
pub struct AttemptRow {
    /// Attempt number, from 1.
    pub attempt: i64,
    /// When, ms.
    #[serde(skip)]
    pub at: i64,
    /// `sent` or `failed`.
    pub outcome: String,
    /// Transport response or error.
    pub detail: String,
}

/// An escalation ticket.
#[derive(Debug, Clone, FromRow)]
pub struct EscalationRow {
    /// Ticket id.
    pub id: String,
    /// Tenant.
    pub tenant_id: String,
    /// Order.
    pub order_id: String,
    /// The event that raised it.
    pub event_id: String,
    /// The decision that raised it (none for host-raised tickets).
    pub decision_id: Option<String>,
    /// Queue.
    pub queue: String,
    /// Priority.
    pub priority: String,
    /// Why.
    pub reason: String,
    /// SLA in minutes.
    pub sla_minutes: Option<i64>,
    /// `open`, `acknowledged`, `resolved`.
    pub status: String,
    /// Opened, ms.
    pub created_at: i64,
    /// Last change, ms.
    pub updated_at: i64,
    /// The tier notified last (0 = first).
    pub tier: i64,
    /// When the current tier's time runs out, ms; none when the ladder stopped.
    pub next_at: Option<i64>,
    /// 1 when the last tier's time ran out without an acknowledgement.
    pub breached: i64,
    /// The held message, for approval tickets.
    pub message_id: Option<String>,
    /// When the held message expires, ms (approval tickets); none once it
    /// expired or was dealt with.
    pub expires_at: Option<i64>,
}

/// A ticket to open.
#[derive(Debug, Clone)]
pub struct NewEscalation<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// Order.
    pub order_id: &'a str,
    /// Event.
    pub event_id: &'a str,
    /// Decision, if a plugin asked.
    pub decision_id: Option<&'a str>,
    /// Queue.
    pub queue: &'a str,
    /// Priority.
    pub priority: &'a str,
    /// Why.
    pub reason: &'a str,
    /// SLA in minutes.
    pub sla_minutes: Option<i64>,
    /// The held message, for approval tickets.
    pub message_id: Option<&'a str>,
    /// When the first tier's time runs out, ms; none: the ladder does not run.
    pub next_at: Option<i64>,
    /// When the held message expires, ms (approval tickets).
    pub expires_at: Option<i64>,
}

/// How many messages [`Store::lease_messages`] may take.
#[derive(Debug, Clone, Copy)]
pub struct LeaseRoom<'a> {
    /// In all.
    pub limit: i64,
    /// Per destination (tenant and channel) with nothing in flight.
    pub per_destination: i64,
    /// Destinations with messages in flight, as (tenant, channel, how many
    /// more it may take): 0 or less leases none of its messages.
    pub busy: &'a [(String, String, i64)],
}

/// The oldest due messages a lease looks at, at least (four times its
/// limit otherwise): it takes from them what the destinations' room allows.
const LEASE_CANDIDATES: i64 = 64;

impl Store {
    /// Create the message `id` unless it exists; returns whether it was
    /// created.
    pub async fn insert_message(&self, id: &str, m: &NewMessage<'_>) -> Result<bool, StoreError> {
        let turn = self.writing().await;
        let mut conn = self.pool.acquire().await?;
        let created = insert_message(&mut *conn, id, m, "[]", None).await?;
        drop(conn);
        self.durable(turn).await?;
        Ok(created)
    }

    /// One message of a tenant.
    pub async fn message(
        &self,
        tenant_id: &str,
        id: &str,
    ) -> Result<Option<MessageRow>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// A tenant's messages, newest first.
    pub async fn messages(
        &self,
        tenant_id: &str,
        f: &MessageFilter<'_>,
        limit: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let order = super::filter("order_id", 2, f.order_id);
        let status = super::filter("status", 3, f.status);
        let channel = super::filter("channel", 4, f.channel);
        Ok(sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages
             WHERE tenant_id = $1 AND {order} AND {status} AND {channel} AND ($5 = '' OR id < $5)
             ORDER BY id DESC LIMIT $6"
        ))
        .bind(tenant_id)
        .bind(f.order_id.unwrap_or(""))
        .bind(f.status.unwrap_or(""))
        .bind(f.channel.unwrap_or(""))
        .bind(f.before.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Messages already sent or scheduled for an order: the plugin's history.
    /// Only the columns a plugin is told about: a sent message's row also
    /// holds its rendering (~4 KiB of email), and an order's later events
    /// would each read all of them again.
    pub async fn order_history(
        &self,
        tenant_id: &str,
        order_id: &str,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT tenant_id, order_id, template, channel, send_at, created_at FROM messages
             WHERE tenant_id = $1 AND order_id = $2 AND status IN ('scheduled', 'sending', 'sent', 'held')
             ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .bind(order_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// [`Store::order_history`] and the open escalations of several orders,
    /// each a (tenant, order) pair, in two queries instead of two an order:
    /// what the event worker reads for a leased batch of events.
    pub async fn order_contexts(
        &self,
        orders: &[(&str, &str)],
    ) -> Result<(Vec<HistoryRow>, Vec<EscalationRow>), StoreError> {
        if orders.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let pairs: Vec<String> = (0..orders.len())
            .map(|n| format!("(tenant_id = ${} AND order_id = ${})", 2 * n + 1, 2 * n + 2))
            .collect();
        let pairs = pairs.join(" OR ");
        let history = format!(
            "SELECT tenant_id, order_id, template, channel, send_at, created_at FROM messages
             WHERE ({pairs}) AND status IN ('scheduled', 'sending', 'sent', 'held')
             ORDER BY created_at, id"
        );
        let escalations = format!(
            "SELECT * FROM escalations
             WHERE ({pairs}) AND status IN ('open', 'acknowledged') ORDER BY id DESC"
        );
        let mut history = sqlx::query_as(&history);
        let mut escalations = sqlx::query_as(&escalations);
        for (tenant, order) in orders {
            history = history.bind(*tenant).bind(*order);
            escalations = escalations.bind(*tenant).bind(*order);
        }
        Ok((
            history.fetch_all(&self.pool).await?,
            escalations.fetch_all(&self.pool).await?,
        ))
    }

    /// What policy needs to know from the store about one notification,
    /// asked in one query (it used to take one each, and on SQLite each is
    /// a round trip to a connection's thread).
    pub async fn policy_facts(&self, q: &FactsQuery<'_>) -> Result<PolicyFacts, StoreError> {
        let (email, sms, whatsapp, cancelled, last_dedupe, marketing): (
            i64,
            i64,
            i64,
            i64,
            Option<i64>,
            i64,
        ) = sqlx::query_as(
            "SELECT
               (SELECT COUNT(*) FROM suppressions WHERE tenant_id = $1 AND channel = 'email' AND address = $2),
               (SELECT COUNT(*) FROM suppressions WHERE tenant_id = $1 AND channel = 'sms' AND address = $3),
               (SELECT COUNT(*) FROM suppressions WHERE tenant_id = $1 AND channel = 'whatsapp' AND address = $3),
               (SELECT COUNT(*) FROM cancel_keys WHERE tenant_id = $1 AND cancel_key = $4),
               (SELECT MAX(created_at) FROM messages
                 WHERE tenant_id = $1 AND dedupe_key = $5 AND status NOT IN ('suppressed', 'cancelled')),
               (SELECT COUNT(*) FROM messages
                 WHERE $7 IS NOT NULL AND tenant_id = $1 AND customer_id = $6 AND category = 'marketing'
                   AND status NOT IN ('suppressed', 'cancelled') AND created_at >= $7)",
        )
        .bind(q.tenant_id)
        .bind(q.email)
        .bind(q.phone)
        .bind(q.cancel_key)
        .bind(q.dedupe_key)
        .bind(q.customer_id)
        .bind(q.marketing_since)
        .fetch_one(&self.pool)
        .await?;
        let suppressed = [("email", email), ("sms", sms), ("whatsapp", whatsapp)]
            .into_iter()
            .filter(|&(_, n)| n > 0)
            .map(|(channel, _)| channel)
            .collect();
        Ok(PolicyFacts {
            suppressed,
            cancelled: cancelled > 0,
            last_dedupe,
            marketing_count: marketing,
        })
    }

    /// Lease up to `limit` due messages for `owner` for `lease_ms`:
    /// scheduled ones whose time has come, and `sending` ones whose lease
    /// expired (a worker died).
    pub async fn lease_due_messages(
        &self,
        owner: &str,
        now: i64,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<MessageRow>, StoreError> {
        let room = LeaseRoom {
            limit,
            per_destination: limit,
            busy: &[],
        };
        self.lease_messages(owner, now, lease_ms, &room).await
    }

    /// Lease due messages as [`Store::lease_due_messages`] does, but only
    /// as many as `room` leaves for each destination (tenant and channel),
    /// oldest first: a destination with no room left is not leased from at
    /// all, so its backlog waits in the table rather than in a worker.
    pub async fn lease_messages(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        room: &LeaseRoom<'_>,
    ) -> Result<Vec<MessageRow>, StoreError> {
        // $1 owner, $2 lease end, $3 now, $4 limit, $5 per destination,
        // $6 candidates; then (tenant, channel) pairs of the full
        // destinations, then (tenant, channel, room) of the others.
        let mut next = 7;
        let mut param = || {
            next += 1;
            format!("${}", next - 1)
        };
        let (full, partial): (Vec<_>, Vec<_>) = room.busy.iter().partition(|(_, _, r)| *r <= 0);
        let excluded: String = full
            .iter()
            .map(|_| {
                format!(
                    " AND NOT (tenant_id = {} AND channel = {})",
                    param(),
                    param()
                )
            })
            .collect();
        let room_of = if partial.is_empty() {
            "$5".to_owned()
        } else {
            let whens: String = partial
                .iter()
                .map(|_| {
                    format!(
                        " WHEN tenant_id = {} AND channel = {} THEN {}",
                        param(),
                        param(),
                        param()
                    )
                })
                .collect();
            format!("CASE{whens} ELSE $5 END")
        };
        // Due and expired are two walks of an index each, in order and
        // stopped at the limit; one `OR` would read every due message
        // and sort them, which under a backlog is most of the work.
        let query = format!(
            "WITH due AS (
                 SELECT id, tenant_id, channel, send_at FROM messages
                 WHERE status = 'scheduled' AND send_at <= $3{excluded}
                 ORDER BY send_at LIMIT $6 {skip_locked}
             ), expired AS (
                 SELECT id, tenant_id, channel, send_at FROM messages
                 WHERE status = 'sending' AND lease_until < $3{excluded}
                 ORDER BY lease_until LIMIT $6 {skip_locked}
             ), candidates AS (
                 SELECT * FROM due UNION ALL SELECT * FROM expired
             ), ranked AS (
                 SELECT id, send_at, {room_of} AS room,
                        ROW_NUMBER() OVER (PARTITION BY tenant_id, channel ORDER BY send_at, id) AS n
                 FROM candidates
             )
             UPDATE messages SET status = 'sending', lease_owner = $1, lease_until = $2, updated_at = $3
             WHERE id IN (SELECT id FROM ranked WHERE n <= room ORDER BY send_at LIMIT $4)
             RETURNING {MESSAGE_COLUMNS}",
            skip_locked = self.skip_locked()
        );
        let mut q = sqlx::query_as(&query)
            .bind(owner)
            .bind(now + lease_ms)
            .bind(now)
            .bind(room.limit)
            .bind(room.per_destination)
            .bind(room.limit.saturating_mul(4).max(LEASE_CANDIDATES));
        for (tenant, channel, _) in &full {
            q = q.bind(tenant.as_str()).bind(channel.as_str());
        }
        for (tenant, channel, r) in &partial {
            q = q.bind(tenant.as_str()).bind(channel.as_str()).bind(*r);
        }
        let turn = self.writing().await;
        let rows = q.fetch_all(&self.pool).await?;
        // A lease is not flushed (see `Store::durable`).
        drop(turn);
        Ok(rows)
    }

    /// Give the messages `ids`, leased to `owner` and not started, back to
    /// the table as they were before the lease (`scheduled`, due as before),
    /// so that the next lease takes them in their order, before any newer
    /// message of their destination. Returns how many were given back.
    pub async fn release_messages(
        &self,
        owner: &str,
        ids: &[&str],
        now: i64,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let query = format!(
            "UPDATE messages SET status = 'scheduled', lease_owner = NULL, lease_until = NULL, updated_at = $2
             WHERE status = 'sending' AND lease_owner = $1 AND id IN ({})",
            super::placeholders(3, ids.len())
        );
        let mut q = sqlx::query(&query).bind(owner).bind(now);
        for id in ids {
            q = q.bind(*id);
        }
        let turn = self.writing().await;
        let done = q.execute(&self.pool).await?;
        // Not flushed, as a lease is not: if it is lost, the lease expires.
        drop(turn);
        Ok(done.rows_affected())
    }

    /// Settle a leased message: its new status, reason and rendering, and the
    /// attempt that led there.
    pub async fn settle_message(
        &self,
        m: &MessageRow,
        status: &str,
        reason: Option<&str>,
        rendered: Option<&str>,
        attempt: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        let turn = self.writing().await;
        let mut tx = self.pool.begin().await?;
        settle(&mut *tx, m, status, reason, rendered, attempt).await?;
        tx.commit().await?;
        self.durable(turn).await?;
        Ok(())
    }

    /// A message's delivery attempts, in order.
    pub async fn attempts(&self, message_id: &str) -> Result<Vec<AttemptRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT attempt, at, outcome, detail FROM delivery_attempts WHERE message_id = $1 ORDER BY at, id",
        )
        .bind(message_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Record a cancel key (durably: it also cancels messages that arrive
    /// later) and cancel pending messages carrying it. Returns their ids.
    pub async fn cancel_key(
        &self,
        tenant_id: &str,
        cancel_key: &str,
        event_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let turn = self.writing().await;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO cancel_keys (tenant_id, cancel_key, event_id, cancelled_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, cancel_key) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(cancel_key)
        .bind(event_id)
        .bind(now)
        .execute(&self.pool)
        .await?;
        let rows: Vec<(String,)> = sqlx::query_as(
            "UPDATE messages SET status = 'cancelled', status_reason = $1, updated_at = $2
             WHERE tenant_id = $3 AND cancel_key = $4 AND status IN ('scheduled', 'held')
             RETURNING id",
        )
        .bind(format!("cancelled by key {cancel_key}"))
        .bind(now)
        .bind(tenant_id)
        .bind(cancel_key)
        .fetch_all(&self.pool)
        .await?;
        self.durable(turn).await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// Whether `cancel_key` was cancelled.
    pub async fn is_cancelled(
        &self,
        tenant_id: &str,
        cancel_key: &str,
    ) -> Result<bool, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(
            "SELECT cancel_key FROM cancel_keys WHERE tenant_id = $1 AND cancel_key = $2",
        )
        .bind(tenant_id)
        .bind(cancel_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// Put an address on the tenant's suppression list.
    pub async fn suppress(
        &self,
        tenant_id: &str,
        channel: &str,
        address: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let turn = self.writing().await;
        sqlx::query(
            "INSERT INTO suppressions (tenant_id, channel, address, reason, created_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, channel, address) DO UPDATE SET reason = excluded.reason",
        )
        .bind(tenant_id)
        .bind(channel)
        .bind(address)
        .bind(reason)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        self.durable(turn).await?;
        Ok(())
    }

    /// A tenant's escalations, newest first, optionally only open ones of an order.
    pub async fn escalations(
        &self,
        tenant_id: &str,
        order_id: Option<&str>,
        open_only: bool,
    ) -> Result<Vec<EscalationRow>, StoreError> {
        // The pipeline looks at one order for every event: by the index.
        let order = super::filter("order_id", 2, order_id);
        Ok(sqlx::query_as(&format!(
            "SELECT * FROM escalations WHERE tenant_id = $1 AND {order}
             AND ($3 = 0 OR status IN ('open', 'acknowledged')) ORDER BY id DESC LIMIT 500"
        ))
        .bind(tenant_id)
        .bind(order_id.unwrap_or(""))
        .bind(i64::from(open_only))
        .fetch_all(&self.pool)
        .await?)
    }
}

/// What [`Store::policy_facts`] looks up.
#[derive(Debug, Clone, Copy)]
pub struct FactsQuery<'a> {
    /// Tenant.
    pub tenant_id: &'a str,
    /// The customer, for the marketing cap.
    pub customer_id: &'a str,
    /// The customer's email address, checked against the suppression list.
    pub email: Option<&'a str>,
    /// The customer's phone number, checked for SMS and WhatsApp.
    pub phone: Option<&'a str>,
    /// The notification's cancel key.
    pub cancel_key: Option<&'a str>,
    /// The notification's dedupe key.
    pub dedupe_key: Option<&'a str>,
    /// Marketing only: count the customer's marketing messages since then (ms).
    pub marketing_since: Option<i64>,
}

/// What [`Store::policy_facts`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFacts {
    /// Channels (`email`, `sms`, `whatsapp`) whose address is suppressed.
    pub suppressed: Vec<&'static str>,
    /// The cancel key was used.
    pub cancelled: bool,
    /// When a message with the dedupe key was last accepted (not
    /// suppressed or cancelled), ms.
    pub last_dedupe: Option<i64>,
    /// Marketing messages accepted for the customer since `marketing_since`.
    pub marketing_count: i64,
}

/// A recorded decision.
#[derive(Debug, Clone, FromRow)]
pub struct DecisionRow {
    /// Decision id.
    pub id: String,
    /// Event.
    pub event_id: String,
    /// Plugin id.
    pub plugin_id: String,
    /// Plugin name.
    pub plugin_name: String,
    /// Plugin version.
    pub plugin_version: String,
    /// `actions`, `rule_error` or `fault`.
    pub outcome: String,
    /// Actions, error or fault, with the log, JSON.
    pub detail: String,
    /// Fuel used.
    pub fuel: i64,
    /// Wall time, µs.
    pub duration_us: i64,
    /// When, ms.
    pub created_at: i64,
}

impl Store {
    /// The decisions taken on an event, in order.
    pub async fn decisions_for_event(
        &self,
        event_id: &str,
    ) -> Result<Vec<DecisionRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, event_id, plugin_id, plugin_name, plugin_version, outcome, detail, fuel, duration_us, created_at
             FROM decisions WHERE event_id = $1 ORDER BY created_at, id",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

impl Store {
    /// Put a failed message back in the queue, due now.
    pub async fn reschedule(&self, id: &str) -> Result<(), StoreError> {
        let turn = self.writing().await;
        let now = now_ms();
        sqlx::query(
            "UPDATE messages SET status = 'scheduled', status_reason = 'retry requested', send_at = $1, updated_at = $1,
                                 attempts = 0, lease_owner = NULL, lease_until = NULL
             WHERE id = $2",
        )
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?;
        self.durable(turn).await?;
        Ok(())
    }
}

/// Append attempt number `attempt` of message `m` to its history, inside the
/// transaction that changes the message.
pub(super) async fn record_attempt(
    conn: &mut impl Exec,
    m: &MessageRow,
    attempt: i64,
    at: i64,
    outcome: &str,
    detail: &str,
) -> Result<(), StoreError> {
    let id = new_id("att");
    conn.execute(
        "INSERT INTO delivery_attempts (id, tenant_id, message_id, attempt, at, outcome, detail)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            id.as_str().into(),
            (&m.tenant_id).into(),
            (&m.id).into(),
            attempt.into(),
            at.into(),
            outcome.into(),
            detail.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Record decision `d` on `conn` unless one with its id exists; returns
/// whether it was recorded.
pub(super) async fn insert_decision(
    conn: &mut impl Exec,
    d: &NewDecision<'_>,
) -> Result<bool, StoreError> {
    let done = conn
        .execute(
            "INSERT INTO decisions (id, tenant_id, event_id, plugin_id, plugin_name, plugin_version, outcome, detail,
                                    fuel, duration_us, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (id) DO NOTHING",
            &[
                d.id.into(),
                d.tenant_id.into(),
                d.event_id.into(),
                d.plugin_id.into(),
                d.plugin_name.into(),
                d.plugin_version.into(),
                d.outcome.into(),
                d.detail.into(),
                d.fuel.into(),
                d.duration_us.into(),
                now_ms().into(),
            ],
        )
        .await?;
    Ok(done > 0)
}

/// Create message `id` on `conn` unless it exists; returns whether it was
/// created. With a `lease` (owner, until in ms) it is created `sending`,
/// already leased: the process that created it delivers it without leasing
/// it from the table (see `schedule::Handoff`).
pub(super) async fn insert_message(
    conn: &mut impl Exec,
    id: &str,
    m: &NewMessage<'_>,
    fallback_channels: &str,
    lease: Option<(&str, i64)>,
) -> Result<bool, StoreError> {
    let now = now_ms();
    let status = if lease.is_some() { "sending" } else { m.status };
    let done = conn
        .execute(
            "INSERT INTO messages (id, tenant_id, event_id, decision_id, order_id, customer_id, channel, template,
                                   locale, category, priority, dedupe_key, cancel_key, data, status, status_reason,
                                   send_at, attempts, recipient, created_at, updated_at, fallback_channels,
                                   lease_owner, lease_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, 0, $18, $19, $19, $20,
                     $21, $22)
             ON CONFLICT (id) DO NOTHING",
            &[
                id.into(),
                m.tenant_id.into(),
                m.event_id.into(),
                m.decision_id.into(),
                m.order_id.into(),
                m.customer_id.into(),
                (&m.channel).into(),
                m.template.into(),
                m.locale.into(),
                (&m.category).into(),
                (&m.priority).into(),
                m.dedupe_key.into(),
                m.cancel_key.into(),
                (&m.data).into(),
                status.into(),
                m.status_reason.into(),
                m.send_at.into(),
                (&m.recipient).into(),
                now.into(),
                fallback_channels.into(),
                lease.map(|(owner, _)| owner).into(),
                lease.map(|(_, until)| until).into(),
            ],
        )
        .await?;
    Ok(done > 0)
}

/// Give `m` its final `status` (with `reason` and the `rendered` message)
/// on `conn`, release its lease and record the delivery `attempt`
/// (outcome, detail) if there was one.
pub(super) async fn settle(
    conn: &mut impl Exec,
    m: &MessageRow,
    status: &str,
    reason: Option<&str>,
    rendered: Option<&str>,
    attempt: Option<(&str, &str)>,
) -> Result<(), StoreError> {
    let now = now_ms();
    let attempts = m.attempts + i64::from(attempt.is_some());
    conn.execute(
        "UPDATE messages SET status = $1, status_reason = $2, rendered = COALESCE($3, rendered), attempts = $4,
                             lease_owner = NULL, lease_until = NULL, updated_at = $5
         WHERE id = $6",
        &[
            status.into(),
            reason.into(),
            rendered.into(),
            attempts.into(),
            now.into(),
            (&m.id).into(),
        ],
    )
    .await?;
    if let Some((outcome, detail)) = attempt {
        record_attempt(conn, m, attempts, now, outcome, detail).await?;
    }
    Ok(())
}
