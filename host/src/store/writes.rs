//! Writes that commit together: what the pipeline stores about one event
//! (its decisions, messages, audit entries and the event's new status), or
//! what delivery stores about one message, in one transaction and one
//! flush instead of one each.

use super::audit::insert_audit;
use super::events::insert_event;
use super::exec::{Direct, Exec, ready};
use super::messages::{insert_decision, insert_message, settle};
use super::writer::rolled_back_on_panic;
use super::{
    AuditEntry, EventRow, MessageRow, NewEvent, NewMessage, Store, StoreError, new_id, now_ms,
};

/// A decision to record.
#[derive(Debug, Clone)]
pub struct NewDecision<'a> {
    /// Decision id (derived from the event and the plugin).
    pub id: &'a str,
    /// Tenant.
    pub tenant_id: &'a str,
    /// Event.
    pub event_id: &'a str,
    /// The installed plugin's stored id.
    pub plugin_id: &'a str,
    /// Its name.
    pub plugin_name: &'a str,
    /// Its version.
    pub plugin_version: &'a str,
    /// `actions`, `rule_error` or `fault`.
    pub outcome: &'a str,
    /// Details, JSON.
    pub detail: &'a str,
    /// Fuel used.
    pub fuel: i64,
    /// Wall time, µs.
    pub duration_us: i64,
}

/// A counter to add one to, with its labels, once the message it comes with
/// is created: an event processed again after a crash finds its messages
/// stored and counts them no second time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// Metric name.
    pub name: &'static str,
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
}

/// What [`Store::commit_counted`] stored.
#[derive(Debug)]
pub struct Stored {
    /// Whether it was stored at all.
    pub committed: Committed,
    /// The counts of the messages it created (see [`Writes::message`]).
    pub counts: Vec<Count>,
    /// The messages created already leased (see [`Writes::message`]),
    /// as the table now holds them, with the end of their lease (ms).
    pub leased: Vec<(MessageRow, i64)>,
}

/// Writes gathered while a step runs, stored by [`Store::commit`].
#[derive(Debug, Default)]
pub struct Writes {
    /// An ingested event and the actor who sent it, stored first.
    event: Option<(OwnedEvent, String)>,
    steps: Vec<Step>,
    finish: Option<(String, &'static str)>,
}

/// What [`apply`] did: the [`Committed`] outcome, and the stored event of
/// [`Writes::event`] with whether it was new.
#[derive(Debug)]
pub(super) struct Applied {
    committed: Committed,
    /// The counts of the messages created.
    counts: Vec<Count>,
    /// The messages created already leased, with the end of their lease.
    leased: Vec<(MessageRow, i64)>,
    event: Option<(EventRow, bool)>,
}

#[derive(Debug)]
enum Step {
    Audit(OwnedAudit),
    Decision(OwnedDecision),
    /// A message and the audit entry that goes with it, written only if
    /// the message is new.
    Message {
        id: String,
        message: Box<OwnedMessage>,
        fallbacks: String,
        audit: OwnedAudit,
        counts: Vec<Count>,
        /// Created leased to (owner, until ms).
        lease: Option<(String, i64)>,
    },
    /// A message handed to its transport.
    Sent {
        message: Box<MessageRow>,
        rendered: String,
        transport_id: String,
        provider_id: Option<String>,
    },
}

/// What [`Store::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Everything was stored.
    Stored,
    /// The event was no longer waiting to be processed (another worker
    /// finished it after this one's lease ran out): nothing was stored.
    AlreadyFinished,
}

impl Writes {
    /// Nothing to write?
    pub fn is_empty(&self) -> bool {
        self.event.is_none() && self.steps.is_empty() && self.finish.is_none()
    }

    /// Store the ingested event `new` unless one with its idempotency key
    /// exists, with its `ingest`/`received` audit entry by `actor` when it
    /// is new.
    pub(super) fn event(&mut self, new: &NewEvent<'_>, actor: &str) {
        self.event = Some((OwnedEvent::from(new), actor.to_owned()));
    }

    /// Append an audit entry.
    pub fn audit(&mut self, e: AuditEntry<'_>) {
        self.steps.push(Step::Audit(OwnedAudit::from(e)));
    }

    /// Record a decision (unless one with its id exists).
    pub fn decision(&mut self, d: &NewDecision<'_>) {
        self.steps.push(Step::Decision(OwnedDecision::from(d)));
    }

    /// Create the message `id` with its fallback channels (a JSON list)
    /// unless it exists, and append `audit` if it was created; `counts` are
    /// reported back by [`Store::commit_counted`] if it was.
    ///
    /// With a `lease` (owner, until in ms), for a message due now that this
    /// process will deliver itself: it is created `sending`, leased to the
    /// owner, and returned by [`Store::commit_counted`] if it was created,
    /// so that it needs no lease from the table.
    pub fn message(
        &mut self,
        id: &str,
        m: &NewMessage<'_>,
        fallbacks: &str,
        audit: AuditEntry<'_>,
        counts: Vec<Count>,
        lease: Option<(&str, i64)>,
    ) {
        self.steps.push(Step::Message {
            id: id.to_owned(),
            message: Box::new(OwnedMessage::from(m)),
            fallbacks: fallbacks.to_owned(),
            audit: OwnedAudit::from(audit),
            counts,
            lease: lease.map(|(owner, until)| (owner.to_owned(), until)),
        });
    }

    /// The messages these writes would create already leased, as (id,
    /// tenant, channel).
    pub fn leased_messages(&self) -> Vec<(&str, &str, &str)> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::Message {
                    id,
                    message,
                    lease: Some(_),
                    ..
                } => Some((
                    id.as_str(),
                    message.tenant_id.as_str(),
                    message.channel.as_str(),
                )),
                _ => None,
            })
            .collect()
    }

    /// Settle the leased message `m` as `sent`: with its rendering, the
    /// transport's receipt and the provider's id for status callbacks.
    pub fn sent(
        &mut self,
        m: &MessageRow,
        rendered: &str,
        transport_id: &str,
        provider_id: Option<&str>,
    ) {
        self.steps.push(Step::Sent {
            message: Box::new(m.clone()),
            rendered: rendered.to_owned(),
            transport_id: transport_id.to_owned(),
            provider_id: provider_id.map(str::to_owned),
        });
    }

    /// Mark the event `id` `status` (`processed`, `failed`) and release its
    /// lease, last; if it is not waiting to be processed any more, nothing
    /// of these writes is stored.
    pub fn finish_event(&mut self, id: &str, status: &'static str) {
        self.finish = Some((id.to_owned(), status));
    }

    /// The messages these writes would create, as (customer, category).
    pub fn pending_messages(&self) -> impl Iterator<Item = (&str, &str)> {
        self.steps.iter().filter_map(|s| match s {
            Step::Message { message, .. } => {
                Some((message.customer_id.as_str(), message.category.as_str()))
            }
            _ => None,
        })
    }
}

impl Store {
    /// Store `writes` in one transaction, durably.
    ///
    /// On a SQLite file, writes that other tasks commit meanwhile go into
    /// the same transaction: the writer thread stores everything queued
    /// when it gets the write turn, so a burst of events and deliveries
    /// costs one transaction and one flush, not one each (see
    /// [`super::writer`]). Each `Writes` is still all or nothing: if any of
    /// them fails, the transaction is rolled back and each is stored again
    /// on its own.
    pub async fn commit(&self, writes: Writes) -> Result<Committed, StoreError> {
        Ok(self.commit_counted(writes).await?.committed)
    }

    /// [`Store::commit`], also returning the counts of the messages these
    /// writes created (none if nothing was stored).
    pub async fn commit_counted(&self, writes: Writes) -> Result<Stored, StoreError> {
        if writes.is_empty() {
            return Ok(Stored {
                committed: Committed::Stored,
                counts: Vec::new(),
                leased: Vec::new(),
            });
        }
        let applied = self.commit_applied(writes).await?;
        Ok(Stored {
            committed: applied.committed,
            counts: applied.counts,
            leased: applied.leased,
        })
    }

    /// Store the event of `writes` (see [`Writes::event`]); returns it and
    /// whether it was new.
    pub(super) async fn commit_event(
        &self,
        writes: Writes,
    ) -> Result<(EventRow, bool), StoreError> {
        self.commit_applied(writes)
            .await?
            .event
            .ok_or_else(|| StoreError::Corrupt {
                what: "events",
                message: "no event was stored".into(),
            })
    }

    async fn commit_applied(&self, writes: Writes) -> Result<Applied, StoreError> {
        let writes = match &self.batch_writer {
            Some(writer) => match writer.store(writes) {
                Ok(answered) => return answered.await,
                Err(writes) => {
                    // Nothing is lost if the writer thread has stopped: the
                    // pool stores these on its own.
                    tracing::error!("the SQLite writer has stopped; storing writes on the pool");
                    writes
                }
            },
            None => writes,
        };
        self.commit_alone(&writes).await
    }

    /// One `Writes` in a transaction of its own (PostgreSQL, and SQLite in
    /// memory).
    async fn commit_alone(&self, writes: &Writes) -> Result<Applied, StoreError> {
        let turn = self.writing().await;
        let mut tx = self.begin_write().await?;
        let committed = apply(&mut *tx, writes).await?;
        tx.commit().await?;
        self.durable(turn).await?;
        Ok(committed)
    }
}

/// On the SQLite writer's connection: `batch` in one transaction, or, if
/// that fails, each `Writes` in a transaction of its own, so that one
/// failing fails alone. The outcomes are in `batch`'s order.
pub(super) fn store_all(
    conn: &mut rusqlite::Connection,
    batch: &[Writes],
) -> Vec<Result<Applied, StoreError>> {
    let failed = match guarded(conn, batch) {
        Ok(outcomes) => return outcomes.into_iter().map(Ok).collect(),
        Err(failed) => failed,
    };
    if batch.len() > 1 {
        tracing::warn!(error = %failed, writes = batch.len(), "storing writes together failed; storing each alone");
    }
    batch
        .iter()
        .map(|writes| guarded(conn, std::slice::from_ref(writes)).map(|mut one| one.remove(0)))
        .collect()
}

/// [`apply_all`], with a panic in it rolled back and answered as an error.
fn guarded(conn: &mut rusqlite::Connection, batch: &[Writes]) -> Result<Vec<Applied>, StoreError> {
    rolled_back_on_panic(conn, |conn| apply_all(conn, batch))
        .unwrap_or_else(|| Err(StoreError::Batch("storing these writes panicked".into())))
}

/// On the SQLite writer's connection: `batch` in one transaction that
/// takes the write lock up front (as `BEGIN IMMEDIATE` does on the pool).
fn apply_all(
    conn: &mut rusqlite::Connection,
    batch: &[Writes],
) -> Result<Vec<Applied>, StoreError> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for writes in batch {
        outcomes.push(ready(apply(&mut Direct(&tx), writes))?);
    }
    tx.commit()?;
    Ok(outcomes)
}

/// Apply `writes` inside a transaction. The event's new status is set
/// first: if it is no longer waiting to be processed (another worker
/// finished it after this one's lease ran out), nothing else is written.
async fn apply(conn: &mut impl Exec, writes: &Writes) -> Result<Applied, StoreError> {
    let mut event = None;
    if let Some((new, actor)) = &writes.event {
        let now = now_ms();
        let new = new.view();
        let (row, inserted) = insert_event(conn, &new, &new_id("evt"), "received", now).await?;
        if inserted {
            let detail = serde_json::json!({ "kind": new.kind, "event_id": new.external_id });
            let entry = AuditEntry {
                tenant_id: new.tenant_id,
                order_id: Some(new.order_id),
                event_id: Some(&row.id),
                message_id: None,
                stage: "ingest",
                action: "received",
                actor,
                detail,
            };
            insert_audit(conn, &entry, now).await?;
        }
        event = Some((row, inserted));
    }
    if let Some((id, status)) = &writes.finish {
        let done = conn
            .execute(
                "UPDATE events SET status = $1, lease_until = NULL WHERE id = $2 AND status = 'received'",
                &[(*status).into(), id.into()],
            )
            .await?;
        if done == 0 {
            return Ok(Applied {
                committed: Committed::AlreadyFinished,
                counts: Vec::new(),
                leased: Vec::new(),
                event,
            });
        }
    }
    let mut counts = Vec::new();
    let mut leased = Vec::new();
    for step in &writes.steps {
        match step {
            Step::Audit(a) => {
                let (entry, at) = a.view();
                insert_audit(conn, &entry, at).await?;
            }
            Step::Decision(d) => {
                insert_decision(conn, &d.view()).await?;
            }
            Step::Message {
                id,
                message,
                fallbacks,
                audit,
                counts: created,
                lease,
            } => {
                let lease = lease
                    .as_ref()
                    .map(|(owner, until)| (owner.as_str(), *until));
                if insert_message(conn, id, &message.view(), fallbacks, lease).await? {
                    let (entry, at) = audit.view();
                    insert_audit(conn, &entry, at).await?;
                    counts.extend(created.iter().cloned());
                    if let Some((_, until)) = lease {
                        leased.push((message.leased_row(id, fallbacks, now_ms()), until));
                    }
                }
            }
            Step::Sent {
                message,
                rendered,
                transport_id,
                provider_id,
            } => {
                if let Some(provider_id) = provider_id {
                    conn.execute(
                        "UPDATE messages SET provider_id = $1 WHERE id = $2",
                        &[provider_id.into(), (&message.id).into()],
                    )
                    .await?;
                }
                let attempt = Some(("sent", transport_id.as_str()));
                settle(conn, message, "sent", None, Some(rendered), attempt).await?;
            }
        }
    }
    Ok(Applied {
        committed: Committed::Stored,
        counts,
        leased,
        event,
    })
}

#[derive(Debug)]
struct OwnedAudit {
    tenant_id: String,
    order_id: Option<String>,
    event_id: Option<String>,
    message_id: Option<String>,
    stage: String,
    action: String,
    actor: String,
    detail: serde_json::Value,
    at: i64,
}

impl From<AuditEntry<'_>> for OwnedAudit {
    fn from(e: AuditEntry<'_>) -> Self {
        Self {
            tenant_id: e.tenant_id.to_owned(),
            order_id: e.order_id.map(str::to_owned),
            event_id: e.event_id.map(str::to_owned),
            message_id: e.message_id.map(str::to_owned),
            stage: e.stage.to_owned(),
            action: e.action.to_owned(),
            actor: e.actor.to_owned(),
            detail: e.detail,
            // When it happened, not when it was committed.
            at: now_ms(),
        }
    }
}

impl OwnedAudit {
    fn view(&self) -> (AuditEntry<'_>, i64) {
        (
            AuditEntry {
                tenant_id: &self.tenant_id,
                order_id: self.order_id.as_deref(),
                event_id: self.event_id.as_deref(),
                message_id: self.message_id.as_deref(),
                stage: &self.stage,
                action: &self.action,
                actor: &self.actor,
                detail: self.detail.clone(),
            },
            self.at,
        )
    }
}

#[derive(Debug)]
struct OwnedDecision {
    id: String,
    tenant_id: String,
    event_id: String,
    plugin_id: String,
    plugin_name: String,
    plugin_version: String,
    outcome: String,
    detail: String,
    fuel: i64,
    duration_us: i64,
}

impl From<&NewDecision<'_>> for OwnedDecision {
    fn from(d: &NewDecision<'_>) -> Self {
        Self {
            id: d.id.to_owned(),
            tenant_id: d.tenant_id.to_owned(),
            event_id: d.event_id.to_owned(),
            plugin_id: d.plugin_id.to_owned(),
            plugin_name: d.plugin_name.to_owned(),
            plugin_version: d.plugin_version.to_owned(),
            outcome: d.outcome.to_owned(),
            detail: d.detail.to_owned(),
            fuel: d.fuel,
            duration_us: d.duration_us,
        }
    }
}

impl OwnedDecision {
    fn view(&self) -> NewDecision<'_> {
        NewDecision {
            id: &self.id,
            tenant_id: &self.tenant_id,
            event_id: &self.event_id,
            plugin_id: &self.plugin_id,
            plugin_name: &self.plugin_name,
            plugin_version: &self.plugin_version,
            outcome: &self.outcome,
            detail: &self.detail,
            fuel: self.fuel,
            duration_us: self.duration_us,
        }
    }
}

#[derive(Debug)]
struct OwnedMessage {
    tenant_id: String,
    event_id: String,
    decision_id: String,
    order_id: String,
    customer_id: String,
    channel: String,
    template: String,
    locale: Option<String>,
    category: String,
    priority: String,
    dedupe_key: Option<String>,
    cancel_key: Option<String>,
    data: String,
    status: String,
    status_reason: Option<String>,
    send_at: i64,
    recipient: Option<String>,
}

impl From<&NewMessage<'_>> for OwnedMessage {
    fn from(m: &NewMessage<'_>) -> Self {
        Self {
            tenant_id: m.tenant_id.to_owned(),
            event_id: m.event_id.to_owned(),
            decision_id: m.decision_id.to_owned(),
            order_id: m.order_id.to_owned(),
            customer_id: m.customer_id.to_owned(),
            channel: m.channel.clone(),
            template: m.template.to_owned(),
            locale: m.locale.map(str::to_owned),
            category: m.category.clone(),
            priority: m.priority.clone(),
            dedupe_key: m.dedupe_key.map(str::to_owned),
            cancel_key: m.cancel_key.map(str::to_owned),
            data: m.data.clone(),
            status: m.status.to_owned(),
            status_reason: m.status_reason.map(str::to_owned),
            send_at: m.send_at,
            recipient: m.recipient.clone(),
        }
    }
}

impl OwnedMessage {
    /// The row of this message as [`insert_message`] created it leased
    /// (`created_at`: about when; the row has the exact time).
    fn leased_row(&self, id: &str, fallbacks: &str, created_at: i64) -> MessageRow {
        MessageRow {
            id: id.to_owned(),
            tenant_id: self.tenant_id.clone(),
            event_id: self.event_id.clone(),
            decision_id: self.decision_id.clone(),
            order_id: self.order_id.clone(),
            customer_id: self.customer_id.clone(),
            channel: self.channel.clone(),
            template: self.template.clone(),
            locale: self.locale.clone(),
            category: self.category.clone(),
            priority: self.priority.clone(),
            dedupe_key: self.dedupe_key.clone(),
            cancel_key: self.cancel_key.clone(),
            data: self.data.clone(),
            status: "sending".to_owned(),
            status_reason: self.status_reason.clone(),
            send_at: self.send_at,
            attempts: 0,
            rendered: None,
            recipient: self.recipient.clone(),
            approved_by: None,
            created_at,
            updated_at: created_at,
            fallback_channels: fallbacks.to_owned(),
            provider_id: None,
        }
    }

    fn view(&self) -> NewMessage<'_> {
        NewMessage {
            tenant_id: &self.tenant_id,
            event_id: &self.event_id,
            decision_id: &self.decision_id,
            order_id: &self.order_id,
            customer_id: &self.customer_id,
            channel: self.channel.clone(),
            template: &self.template,
            locale: self.locale.as_deref(),
            category: self.category.clone(),
            priority: self.priority.clone(),
            dedupe_key: self.dedupe_key.as_deref(),
            cancel_key: self.cancel_key.as_deref(),
            data: self.data.clone(),
            status: &self.status,
            status_reason: self.status_reason.as_deref(),
            send_at: self.send_at,
            recipient: self.recipient.clone(),
        }
    }
}

#[derive(Debug)]
struct OwnedEvent {
    tenant_id: String,
    external_id: String,
    idempotency_key: String,
    order_id: String,
    kind: String,
    occurred_at: i64,
    body: String,
}

impl From<&NewEvent<'_>> for OwnedEvent {
    fn from(e: &NewEvent<'_>) -> Self {
        Self {
            tenant_id: e.tenant_id.to_owned(),
            external_id: e.external_id.to_owned(),
            idempotency_key: e.idempotency_key.to_owned(),
            order_id: e.order_id.to_owned(),
            kind: e.kind.to_owned(),
            occurred_at: e.occurred_at,
            body: e.body.to_owned(),
        }
    }
}

impl OwnedEvent {
    fn view(&self) -> NewEvent<'_> {
        NewEvent {
            tenant_id: &self.tenant_id,
            external_id: &self.external_id,
            idempotency_key: &self.idempotency_key,
            order_id: &self.order_id,
            kind: &self.kind,
            occurred_at: self.occurred_at,
            body: &self.body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(tenant_id: &'a str, key: &'a str) -> NewEvent<'a> {
        NewEvent {
            tenant_id,
            external_id: key,
            idempotency_key: key,
            order_id: "ord_1",
            kind: "order_created",
            occurred_at: 0,
            body: "{}",
        }
    }

    /// A store on a new SQLite file (so with the writer thread), with one
    /// tenant; the directory is the caller's to remove.
    async fn file_store() -> (std::path::PathBuf, Store, super::super::TenantRow) {
        let dir = std::env::temp_dir().join(new_id("tidings-writes-test"));
        std::fs::create_dir_all(&dir).expect("dir");
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let store = Store::connect(&url).await.expect("connect");
        let tenant = store
            .create_tenant("Shop", "UTC", "en", &serde_json::json!({}))
            .await
            .expect("tenant");
        (dir, store, tenant)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_that_fail_in_a_batch_fail_alone_and_the_others_are_stored() {
        let (dir, store, tenant) = file_store().await;
        assert!(store.batch_writer.is_some(), "a file has the writer thread");

        // Both are queued while this test holds the turn, so the writer
        // stores them in one batch when it gets it.
        let turn = store.writing().await;
        let (good, bad) = {
            let (s1, s2) = (store.clone(), store.clone());
            let tenant_id = tenant.id.clone();
            let good = tokio::spawn(async move {
                let mut w = Writes::default();
                w.event(&event(&tenant_id, "evt_good"), "test");
                s1.commit_event(w).await
            });
            let bad = tokio::spawn(async move {
                // No such tenant: the foreign key fails.
                let mut w = Writes::default();
                w.event(&event("ten_missing", "evt_bad"), "test");
                s2.commit_event(w).await
            });
            (good, bad)
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(turn);

        let (row, new) = good
            .await
            .expect("task")
            .expect("the good writes are stored");
        assert!(new);
        assert_eq!(row.idempotency_key, "evt_good");
        assert!(bad.await.expect("task").is_err(), "the bad writes fail");
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events")
            .fetch_one(store.pool())
            .await
            .expect("count");
        assert_eq!(count, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The writer thread writes only in the write turn, which writers on
    /// the pool (leases) take too: nothing is stored while another holds
    /// it, and what was queued meanwhile is stored once it is given back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_waits_for_the_write_turn() {
        let (dir, store, tenant) = file_store().await;
        let commit = |key: &'static str| {
            let (store, tenant_id) = (store.clone(), tenant.id.clone());
            tokio::spawn(async move {
                let mut w = Writes::default();
                w.event(&event(&tenant_id, key), "test");
                store.commit_event(w).await
            })
        };
        let events = || async {
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM events")
                .fetch_one(store.pool())
                .await
                .expect("count");
            count
        };
        let turn = store.writing().await;
        let (first, second) = (commit("evt_first"), commit("evt_second"));
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!first.is_finished() && !second.is_finished());
        assert_eq!(
            events().await,
            0,
            "nothing is written during another's turn"
        );
        drop(turn);

        for (task, key) in [(first, "evt_first"), (second, "evt_second")] {
            let (row, new) = tokio::time::timeout(std::time::Duration::from_secs(10), task)
                .await
                .expect("answered once the turn is given back")
                .expect("task")
                .expect("stored");
            assert!(new);
            assert_eq!(row.idempotency_key, key);
        }
        assert_eq!(events().await, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
