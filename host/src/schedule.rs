//! The `schedule` stage: durable jobs, leased by workers.
//!
//! Events and messages are rows, not tasks in memory. The event worker
//! leases received events and runs them through the pipeline; the message
//! worker leases messages whose `send_at` has come, renders and dispatches
//! them, and settles them (`sent`, `failed`, `cancelled`). A lease that
//! expires — the process died mid-way — makes the job available again, so a
//! restart loses nothing. Delivery is at-least-once: a process killed after
//! the transport accepted a message but before it was marked sent will send
//! it again after the lease expires, with the same message id.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tidings_sdk::action::Timing;
use tidings_sdk::types::{Category, Channel, OrderEvent, Timestamp};
use tokio::sync::Notify;

use crate::dispatch::{Outbound, Transport};
use crate::pipeline::{Pipeline, PipelineError, parse_enum};
use crate::render::{self, Rendered, TemplateParts, TemplateSet};
use crate::store::{AuditEntry, EventRow, LeaseRoom, MessageRow, Writes};

/// How long a worker owns a leased job before others may take it, unless
/// the service is configured otherwise (`--lease-secs`).
pub const LEASE: Duration = Duration::from_secs(60);
/// How often idle workers look for due work.
pub const POLL: Duration = Duration::from_millis(250);

/// When a timing asks for a message, never before `now`.
pub fn send_at(timing: &Timing, now: Timestamp) -> Timestamp {
    match timing {
        Timing::Now => now,
        Timing::After { seconds } => {
            let seconds = i64::try_from(*seconds).unwrap_or(i64::MAX);
            now.checked_add(jiff::SignedDuration::from_secs(seconds))
                .unwrap_or(Timestamp::MAX)
        }
        Timing::At { at } => (*at).max(now),
    }
}

/// Wakes the workers early when new work arrives.
#[derive(Debug, Default)]
pub struct Wakeups {
    /// New events were stored.
    pub events: Notify,
    /// New messages may be due.
    pub messages: Notify,
}

/// Runs the event worker until the process stops.
pub async fn run_event_worker(pipeline: Pipeline, wake: Arc<Wakeups>) {
    loop {
        match process_some_events(&pipeline, &wake).await {
            Ok(0) => {
                let _ = tokio::time::timeout(POLL, wake.events.notified()).await;
            }
            Ok(_) => {}
            Err(err) => {
                tracing::error!(error = %err, "event worker failed; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// Lease and process one batch of events; returns how many. A batch holds
/// at most one event of an order, its oldest still waiting (see
/// [`crate::store::Store::lease_events`]): an order's events are processed
/// one after the other, in the order received, even by several workers;
/// different orders run concurrently.
pub async fn process_some_events(
    pipeline: &Pipeline,
    wake: &Wakeups,
) -> Result<usize, PipelineError> {
    let rows = pipeline.store.lease_events(64, pipeline.lease_ms()).await?;
    let count = rows.len();
    // Their orders' history and open escalations, in two queries for the
    // batch; if that fails, each event reads its own.
    let mut contexts = match pipeline.order_contexts(&rows).await {
        Ok(contexts) => Some(contexts),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the orders of leased events; each reads its own");
            None
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for row in rows {
        let pipeline = pipeline.clone();
        // An order without history or open escalations has no entry.
        let context = contexts.as_mut().map(|contexts| {
            contexts
                .remove(&(row.tenant_id.clone(), row.order_id.clone()))
                .unwrap_or_default()
        });
        tasks.spawn(async move {
            if let Err(err) = pipeline.process_event(&row, context).await {
                tracing::error!(event = %row.id, error = %err, "event processing failed");
                let _ = pipeline.store.finish_event(&row.id, "failed").await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    if count > 0 {
        // Messages not handed over (no room, or not due yet) are in the table.
        pipeline.handoff.look_in_table();
        wake.messages.notify_one();
    }
    Ok(count)
}

/// How many messages one worker delivers at once (from rendering to storing
/// the outcome): four destinations' worth.
pub const CONCURRENCY: usize = 4 * PER_DESTINATION;
/// How many of those may be at one tenant's channel's transport at once. It
/// bounds two things:
/// - a provider that hangs or a slow webhook endpoint holds at most this many
///   slots, a quarter of the worker's, so other tenants and channels keep
///   moving;
/// - one destination sends at most this many messages at a time, so at most
///   `PER_DESTINATION / latency` per second: ~170/s against a relay that
///   takes 45 ms a message. 32 gave 3.4 times that, but more deliveries at
///   once delayed the ingest door (BENCHMARKS.md, 2026-12-06).
pub const PER_DESTINATION: usize = 8;

/// How many of a destination's due messages the message worker leases
/// beyond its [`PER_DESTINATION`] places, and holds, leased and oldest first,
/// until a place comes free. A busy destination is then leased from once
/// for every half of these that start, rather than once for every place
/// that comes free (a lease is a write, and the messages' events a read):
/// +30 % end to end, 9 of 9 side-by-side pairs (BENCHMARKS.md, 2026-12-07).
/// The table's order holds: a destination holding any takes no handed-over
/// message, and it is leased from again, oldest due first, while it still
/// holds half. A destination that hangs holds at most these and its places;
/// the rest of its backlog waits in the table.
pub const LEASED_AHEAD: usize = 7 * PER_DESTINATION;

/// How many messages the event worker may hand over to the message worker
/// at once (stored, or being stored, and not yet started); beyond that,
/// messages due now are stored `scheduled` and leased from the table.
pub const HANDOFF_ROOM: usize = 2 * CONCURRENCY;

/// Messages due now, handed from the event worker to the message worker of
/// the same process as they are stored. They are stored already leased to
/// that worker (`sending`, see [`crate::store::Writes::message`]),
/// so the worker neither leases them from the table nor reads their event
/// again; the table stays the durable copy: if the process dies first, the
/// lease expires and any worker takes them, as any leased message.
///
/// A message is handed over only if its destination has room among its
/// [`PER_DESTINATION`] places, which it takes when reserved, and holds no
/// message leased ahead of them (see [`LEASED_AHEAD`]).
#[derive(Debug, Default)]
pub struct Handoff {
    /// The lease owner of this process's message worker; none while no
    /// worker runs (messages then wait in the table).
    owner: Mutex<Option<String>>,
    /// Handed over, not yet taken by the worker.
    queue: Mutex<Vec<Handed>>,
    /// Reserved by writes not stored yet, or handed over and not yet
    /// started by the worker.
    used: AtomicUsize,
    /// The message worker's places by destination: in flight, handed over,
    /// or reserved for a message being stored.
    busy: Arc<Busy>,
    /// Notified when a destination has room again.
    room_made: Arc<Notify>,
    /// The worker is leasing from the table with the room it saw: no
    /// message is handed over meanwhile (it is stored `scheduled`).
    leasing: AtomicBool,
    /// The table may have messages due that the worker has not leased:
    /// someone stored or rescheduled messages (see
    /// [`Pipeline::wake_messages`]), the last lease left some, or time
    /// passed. Handed-over messages alone do not send it to the table.
    table: AtomicBool,
}

impl Handoff {
    /// The message worker leasing as `owner` takes handed-over messages.
    pub fn attach(&self, owner: &str) {
        *self.owner.lock().unwrap_or_else(|e| e.into_inner()) = Some(owner.to_owned());
        self.look_in_table();
    }

    /// A place for one message to `tenant`'s `channel`, with the owner to
    /// lease it to; none without a worker, or without room in the handoff
    /// or at the destination. Each reservation is either handed over
    /// ([`Handoff::hand`]) or [released](Handoff::release).
    pub fn reserve(&self, tenant: &str, channel: &str) -> Option<String> {
        let owner = self
            .owner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        self.used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < HANDOFF_ROOM).then_some(n + 1)
            })
            .ok()?;
        if !self
            .busy
            .try_add(tenant, channel, PER_DESTINATION, &self.leasing)
        {
            self.used.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(owner)
    }

    /// Give back a reservation for `tenant`'s `channel` that was not handed
    /// over (not stored, or the message existed already), or a handed-over
    /// message the worker leaves to the table.
    pub fn release(&self, tenant: &str, channel: &str) {
        self.used.fetch_sub(1, Ordering::SeqCst);
        self.busy.free(tenant, channel);
        self.room_made.notify_one();
    }

    /// Hand over `messages` of the event `event`, stored leased until the
    /// time (ms) that comes with each.
    pub fn hand(&self, messages: Vec<(MessageRow, i64)>, event: &EventRow) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(messages.into_iter().map(|(message, until)| Handed {
                message,
                event: Some(event.clone()),
                until,
            }));
    }

    /// The messages handed over since the last call.
    fn take(&self) -> Vec<Handed> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The worker started a handed-over message: its place at the
    /// destination passes to the delivery's [`Slot`].
    fn started(&self) {
        self.used.fetch_sub(1, Ordering::SeqCst);
    }

    /// The worker is about to lease from the table: the destinations with
    /// messages in the worker, as (tenant, channel, room left). Until
    /// [`Handoff::end_lease`] nothing is handed over, so the room stays.
    fn begin_lease(&self) -> Vec<(String, String, i64)> {
        let busy = self.busy.lock();
        self.leasing.store(true, Ordering::SeqCst);
        busy.iter()
            .map(|((tenant, channel), places)| {
                // Leased again once half of what it holds ahead has started.
                let room = if places.ahead > LEASED_AHEAD / 2 {
                    0
                } else {
                    (PER_DESTINATION + LEASED_AHEAD).saturating_sub(places.taken + places.ahead)
                };
                (tenant.clone(), channel.clone(), room as i64)
            })
            .collect()
    }

    /// The leased messages have their places.
    fn end_lease(&self) {
        self.leasing.store(false, Ordering::SeqCst);
    }

    /// The table may have due messages for the worker to lease.
    pub fn look_in_table(&self) {
        self.table.store(true, Ordering::SeqCst);
    }
}

/// A message handed over or leased ahead: leased until `until` (ms), with
/// its event if read.
#[derive(Debug)]
struct Handed {
    message: MessageRow,
    event: Option<EventRow>,
    until: i64,
}

/// Runs the message worker until the process stops: delivers the messages
/// handed over by the event worker and leases due messages from the table
/// while it has free slots, no more for one destination (tenant and
/// channel) than [`PER_DESTINATION`] at a time, and delivers them
/// concurrently.
pub async fn run_message_worker(
    pipeline: Pipeline,
    transport: Arc<dyn Transport>,
    wake: Arc<Wakeups>,
    owner: String,
) {
    // Messages in flight by destination, with those handed over (the event
    // worker reserves their places).
    let busy = pipeline.handoff.busy.clone();
    // Notified when a destination has room again.
    let room_made = pipeline.handoff.room_made.clone();
    let mut tasks = tokio::task::JoinSet::new();
    // Handed over and leased to this worker, waiting for room.
    let mut waiting: VecDeque<Handed> = VecDeque::new();
    // Leased from the table ahead of their destinations' places, oldest
    // first, and the destinations whose room a lease used up: each is
    // leased from again once half of what it holds has started.
    let mut ahead: VecDeque<Handed> = VecDeque::new();
    let mut filled: HashSet<(String, String)> = HashSet::new();
    // Messages that waited too long to start, to give back to the table.
    let mut overdue: Vec<String> = Vec::new();
    let starting = Starting {
        pipeline: &pipeline,
        transport: &transport,
        busy: &busy,
        room_made: &room_made,
    };
    pipeline.handoff.attach(&owner);
    loop {
        while tasks.try_join_next().is_some() {}
        waiting.extend(pipeline.handoff.take());
        start_waiting(
            starting,
            &mut tasks,
            &mut waiting,
            Place::Reserved,
            &mut overdue,
        );
        start_waiting(
            starting,
            &mut tasks,
            &mut ahead,
            Place::WhenFree,
            &mut overdue,
        );
        // Before the next lease, so that it takes them before newer ones.
        give_back(&pipeline, &owner, &mut overdue).await;
        filled.retain(|destination| {
            let refill = busy.ahead(destination) <= LEASED_AHEAD / 2;
            if refill {
                pipeline.handoff.look_in_table();
            }
            !refill
        });
        let free = CONCURRENCY.saturating_sub(tasks.len());
        if free == 0 {
            let _ = tasks.join_next().await;
            continue;
        }
        // Held messages use up the room to lease ahead.
        let limit = (free + LEASED_AHEAD).saturating_sub(ahead.len());
        // Woken only by messages handed over: nothing to lease.
        if limit == 0 || !pipeline.handoff.table.swap(false, Ordering::SeqCst) {
            wait_for_work(&mut tasks, &pipeline.handoff, &wake).await;
            continue;
        }
        // No message is handed over from here until the leased ones are
        // held, so the room leased for stays free for them.
        let in_flight = pipeline.handoff.begin_lease();
        let room = LeaseRoom {
            limit: limit as i64,
            per_destination: (PER_DESTINATION + LEASED_AHEAD) as i64,
            busy: &in_flight,
        };
        let now = pipeline.now().as_millisecond();
        let until = now + pipeline.lease_ms();
        let leased = pipeline
            .store
            .lease_messages(&owner, now, pipeline.lease_ms(), &room)
            .await;
        if let Ok(leased) = &leased {
            for m in leased {
                busy.hold(&(m.tenant_id.clone(), m.channel.clone()));
            }
        }
        pipeline.handoff.end_lease();
        let leased = match leased {
            Ok(leased) => leased,
            Err(err) => {
                tracing::error!(error = %err, "message worker failed; retrying");
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        // Destinations without room were not looked at, and those this
        // lease filled may have more: lease for them when they have room.
        filled.extend(
            in_flight
                .iter()
                .filter(|(_, _, room)| *room <= 0)
                .map(|(tenant, channel, _)| (tenant.clone(), channel.clone())),
        );
        filled.extend(filled_destinations(&leased, &room));
        // Unless this lease took its limit, it took all that was due for
        // the destinations with room: lease again only when that changes.
        let all_taken = (leased.len() as i64) < room.limit;
        if !all_taken {
            pipeline.handoff.look_in_table();
        }
        if leased.is_empty() {
            wait_for_work(&mut tasks, &pipeline.handoff, &wake).await;
            continue;
        }
        // The events the messages render from, read in one query, with
        // how many of the messages render from each.
        let ids: Vec<&str> = leased.iter().map(|m| m.event_id.as_str()).collect();
        let mut events: HashMap<String, (EventRow, usize)> = match pipeline
            .store
            .events_by_id(&ids)
            .await
        {
            Ok(rows) => rows.into_iter().map(|r| (r.id.clone(), (r, 0))).collect(),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the events of leased messages; each reads its own");
                HashMap::new()
            }
        };
        for id in ids {
            if let Some((_, uses)) = events.get_mut(id) {
                *uses += 1;
            }
        }
        ahead.extend(leased.into_iter().map(|message| Handed {
            event: take_event(&mut events, &message.event_id),
            message,
            until,
        }));
        start_waiting(
            starting,
            &mut tasks,
            &mut ahead,
            Place::WhenFree,
            &mut overdue,
        );
        if all_taken {
            wait_for_work(&mut tasks, &pipeline.handoff, &wake).await;
        }
    }
}

/// How a message waiting in the worker has its place at its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Reserved when it was stored (handed over).
    Reserved,
    /// Taken when one comes free (leased ahead).
    WhenFree,
}

/// What the message worker starts deliveries with.
#[derive(Clone, Copy)]
struct Starting<'a> {
    pipeline: &'a Pipeline,
    transport: &'a Arc<dyn Transport>,
    busy: &'a Arc<Busy>,
    room_made: &'a Arc<Notify>,
}

/// Start delivering the messages in `queue` whose destination has a place
/// for them, oldest first, while the worker has free slots. Those that
/// waited until half their lease was gone are taken out of the worker and
/// their ids added to `overdue`, to be [given back](give_back) to the table.
fn start_waiting(
    Starting {
        pipeline,
        transport,
        busy,
        room_made,
    }: Starting<'_>,
    tasks: &mut tokio::task::JoinSet<()>,
    queue: &mut VecDeque<Handed>,
    place: Place,
    overdue: &mut Vec<String>,
) {
    let deadline = pipeline.now().as_millisecond() + pipeline.lease_ms() / 2;
    let mut kept = VecDeque::with_capacity(queue.len());
    while let Some(waiting) = queue.pop_front() {
        let m = &waiting.message;
        if waiting.until < deadline {
            match place {
                Place::Reserved => pipeline.handoff.release(&m.tenant_id, &m.channel),
                Place::WhenFree => busy.unhold(&m.tenant_id, &m.channel),
            }
            overdue.push(waiting.message.id);
            continue;
        }
        let startable = tasks.len() < CONCURRENCY
            && match place {
                Place::Reserved => true,
                Place::WhenFree => busy.promote(&(m.tenant_id.clone(), m.channel.clone())),
            };
        if !startable {
            kept.push_back(waiting);
            continue;
        }
        if place == Place::Reserved {
            pipeline.handoff.started();
        }
        let slot = Slot::adopt(busy, room_made, m);
        start(
            pipeline,
            transport,
            tasks,
            waiting.message,
            waiting.event,
            slot,
        );
    }
    *queue = kept;
}

/// Give the `overdue` messages, leased to `owner`, back to the table, due
/// as they were. A message that waits in the worker until its lease is half
/// gone (its destination hangs, or is slower than its backlog) must not be
/// delivered by this worker once the lease expires and another may have
/// taken it; given back, it is leased again in its order, before the newer
/// messages of its destination. If that fails, it is leased again when its
/// lease expires.
async fn give_back(pipeline: &Pipeline, owner: &str, overdue: &mut Vec<String>) {
    if overdue.is_empty() {
        return;
    }
    let ids: Vec<&str> = overdue.iter().map(String::as_str).collect();
    let now = pipeline.now().as_millisecond();
    match pipeline.store.release_messages(owner, &ids, now).await {
        Ok(n) => {
            tracing::warn!(
                messages = n,
                "messages waited half their lease for a free place; given back to the table in their order"
            );
            pipeline.handoff.look_in_table();
        }
        Err(err) => {
            tracing::warn!(error = %err, messages = ids.len(), "cannot give messages that waited too long back to the table; they are leased again when their lease expires");
        }
    }
    overdue.clear();
}

/// Deliver the leased message `m` in a task of `tasks`; `event` is its
/// event if already read (otherwise it reads it).
fn start(
    pipeline: &Pipeline,
    transport: &Arc<dyn Transport>,
    tasks: &mut tokio::task::JoinSet<()>,
    m: MessageRow,
    event: Option<EventRow>,
    slot: Slot,
) {
    let (pipeline, transport) = (pipeline.clone(), transport.clone());
    tasks.spawn(async move {
        let event = match event {
            Some(event) => Ok(Some(event)),
            // Not in the batch's read.
            None => pipeline.store.event(&m.tenant_id, &m.event_id).await,
        };
        let delivered = match event {
            Ok(event) => deliver_with(&pipeline, transport.as_ref(), &m, event, Some(slot)).await,
            Err(err) => Err(err.into()),
        };
        if let Err(err) = delivered {
            tracing::error!(message = %m.id, error = %err, "delivery failed; the lease will expire and it is retried");
        }
    });
}

/// The event `id` for one of the messages that use it: a copy while others
/// still need it, the event itself for the last.
fn take_event(events: &mut HashMap<String, (EventRow, usize)>, id: &str) -> Option<EventRow> {
    let (event, uses) = events.get_mut(id)?;
    if *uses > 1 {
        *uses -= 1;
        return Some(event.clone());
    }
    events.remove(id).map(|(event, _)| event)
}

/// The destinations of `leased` whose room in `room` it took in full.
fn filled_destinations(leased: &[MessageRow], room: &LeaseRoom<'_>) -> Vec<(String, String)> {
    let mut taken: HashMap<(&str, &str), i64> = HashMap::new();
    for m in leased {
        *taken.entry((&m.tenant_id, &m.channel)).or_default() += 1;
    }
    taken
        .into_iter()
        .filter(|((tenant, channel), taken)| {
            let room = room
                .busy
                .iter()
                .find(|(t, c, _)| t == tenant && c == channel)
                .map_or(room.per_destination, |(_, _, room)| *room);
            *taken >= room
        })
        .map(|((tenant, channel), _)| (tenant.to_owned(), channel.to_owned()))
        .collect()
}

/// Wait until a delivery makes room, new messages may be due, or [`POLL`]
/// passed: then messages scheduled for later may have come due, and the
/// worker looks in the table.
async fn wait_for_work(tasks: &mut tokio::task::JoinSet<()>, handoff: &Handoff, wake: &Wakeups) {
    tokio::select! {
        _ = tasks.join_next(), if !tasks.is_empty() => {}
        _ = handoff.room_made.notified() => {}
        woken = tokio::time::timeout(POLL, wake.messages.notified()) => {
            if woken.is_err() {
                handoff.look_in_table();
            }
        }
    }
}

/// The message worker's messages by destination (tenant, channel).
#[derive(Debug, Default)]
struct Busy(std::sync::Mutex<HashMap<(String, String), Places>>);

/// One destination's messages in the worker.
#[derive(Debug, Default, Clone, Copy)]
struct Places {
    /// In flight, handed over, or reserved for a message being stored: at
    /// most [`PER_DESTINATION`].
    taken: usize,
    /// Leased from the table ahead of a place (see [`LEASED_AHEAD`]).
    ahead: usize,
}

impl Busy {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Places>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a place at `tenant`'s `channel` if it has fewer than `limit`
    /// taken and holds no message leased ahead (those come first), unless
    /// the worker is `leasing` (checked under the same lock as the room it
    /// leases with is read).
    fn try_add(&self, tenant: &str, channel: &str, limit: usize, leasing: &AtomicBool) -> bool {
        let mut busy = self.lock();
        if leasing.load(Ordering::SeqCst) {
            return false;
        }
        let places = busy
            .entry((tenant.to_owned(), channel.to_owned()))
            .or_default();
        if places.ahead == 0 && places.taken < limit {
            places.taken += 1;
            true
        } else {
            false
        }
    }

    /// Hold a message leased ahead of a place at `destination`.
    fn hold(&self, destination: &(String, String)) {
        self.lock().entry(destination.clone()).or_default().ahead += 1;
    }

    /// Move a message held ahead at `destination` to a place, if it has
    /// fewer than [`PER_DESTINATION`] taken.
    fn promote(&self, destination: &(String, String)) -> bool {
        let mut busy = self.lock();
        let Some(places) = busy.get_mut(destination) else {
            return false;
        };
        if places.taken < PER_DESTINATION && places.ahead > 0 {
            places.ahead -= 1;
            places.taken += 1;
            true
        } else {
            false
        }
    }

    /// How many messages `destination` has held ahead.
    fn ahead(&self, destination: &(String, String)) -> usize {
        self.lock()
            .get(destination)
            .map_or(0, |places| places.ahead)
    }

    /// Give back a place taken at `tenant`'s `channel`.
    fn free(&self, tenant: &str, channel: &str) {
        self.update(tenant, channel, |places| {
            places.taken = places.taken.saturating_sub(1);
        });
    }

    /// Let go of a message held ahead at `tenant`'s `channel`.
    fn unhold(&self, tenant: &str, channel: &str) {
        self.update(tenant, channel, |places| {
            places.ahead = places.ahead.saturating_sub(1);
        });
    }

    /// Change a destination's places; forget it once it has none.
    fn update(&self, tenant: &str, channel: &str, change: impl FnOnce(&mut Places)) {
        let mut busy = self.lock();
        let key = (tenant.to_owned(), channel.to_owned());
        if let Some(places) = busy.get_mut(&key) {
            change(places);
            if places.taken == 0 && places.ahead == 0 {
                busy.remove(&key);
            }
        }
    }
}

/// A message's place among its destination's [`PER_DESTINATION`]: taken
/// when it is leased, given back as soon as the transport has answered
/// (storing the outcome is the host's own work, not the destination's).
struct Slot {
    busy: Arc<Busy>,
    room_made: Arc<Notify>,
    destination: (String, String),
}

impl Slot {
    /// The place at `m`'s destination already taken for it (a handed-over
    /// message's reservation, or a leased one's promotion).
    fn adopt(busy: &Arc<Busy>, room_made: &Arc<Notify>, m: &MessageRow) -> Self {
        Self {
            busy: busy.clone(),
            room_made: room_made.clone(),
            destination: (m.tenant_id.clone(), m.channel.clone()),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (tenant, channel) = &self.destination;
        self.busy.free(tenant, channel);
        self.room_made.notify_one();
    }
}

/// Lease the due messages and deliver them; returns how many.
pub async fn deliver_due(
    pipeline: &Pipeline,
    transport: &dyn Transport,
    owner: &str,
) -> Result<usize, PipelineError> {
    let leased = pipeline
        .store
        .lease_due_messages(
            owner,
            pipeline.now().as_millisecond(),
            32,
            pipeline.lease_ms(),
        )
        .await?;
    let count = leased.len();
    for message in leased {
        deliver(pipeline, transport, &message).await?;
    }
    Ok(count)
}

/// Render and dispatch one leased message, and settle it.
pub async fn deliver(
    pipeline: &Pipeline,
    transport: &dyn Transport,
    m: &MessageRow,
) -> Result<(), PipelineError> {
    let event = pipeline.store.event(&m.tenant_id, &m.event_id).await?;
    deliver_with(pipeline, transport, m, event, None).await
}

/// [`deliver`], with the message's event already read (`None`: missing);
/// `slot` is given back when the transport has answered.
async fn deliver_with(
    pipeline: &Pipeline,
    transport: &dyn Transport,
    m: &MessageRow,
    event_row: Option<EventRow>,
    slot: Option<Slot>,
) -> Result<(), PipelineError> {
    let store = &pipeline.store;
    if let Some(key) = &m.cancel_key
        && store.is_cancelled(&m.tenant_id, key).await?
    {
        let reason = format!("cancelled by key {key}");
        store
            .settle_message(m, "cancelled", Some(&reason), None, None)
            .await?;
        pipeline.metrics.inc(
            "tidings_messages_total",
            &[
                ("tenant", &m.tenant_id),
                ("channel", &m.channel),
                ("status", "cancelled"),
            ],
        );
        return audit(
            pipeline,
            m,
            "schedule",
            "cancelled",
            json!({ "cancel_key": key }),
        )
        .await;
    }
    let (_, settings) = pipeline.tenant_cached(&m.tenant_id).await?;
    let event: Option<OrderEvent> = event_row
        .filter(|r| r.tenant_id == m.tenant_id)
        .and_then(|r| serde_json::from_str(&r.body).ok());
    let Some(event) = event else {
        return fail(pipeline, m, "the event of this message is missing").await;
    };
    let Some(channel) = parse_enum::<Channel>(&m.channel) else {
        return fail(pipeline, m, &format!("unknown channel {}", m.channel)).await;
    };

    let rendered = if m.approved_by.is_some() {
        // Approved after it was held: send what the agent approved, but only
        // if policy still allows it (consent may have changed meanwhile).
        if let Some(held) = recheck_policy(pipeline, m, &event, &settings).await? {
            return Ok(held);
        }
        match m
            .rendered
            .as_deref()
            .and_then(|r| serde_json::from_str::<Rendered>(r).ok())
        {
            Some(rendered) => rendered,
            None => return fail(pipeline, m, "the approved rendering is missing").await,
        }
    } else {
        match render_message(pipeline, m, &event, &settings).await? {
            Ok(rendered) => rendered,
            Err(err) => return fail(pipeline, m, &format!("render: {err}")).await,
        }
    };
    let rendered_json = serde_json::to_string(&rendered).expect("rendered messages serialise");
    // Stored with the outcome of the hand-off, in one transaction.
    let mut writes = Writes::default();
    writes.audit(entry(
        m,
        "render",
        "rendered",
        json!({ "template": m.template, "locale": rendered.locale, "approved_by": m.approved_by }),
    ));

    let customer = &event.order.customer;
    let to = match (&m.recipient, channel) {
        (Some(recipient), _) => Some(recipient.as_str()),
        (None, Channel::Email) => customer.email.as_deref(),
        (None, Channel::Sms | Channel::Whatsapp) => customer.phone.as_deref(),
        (None, Channel::Push | Channel::Webhook) => None,
    };
    let (from, reply_to) = (settings.email_from(), settings.email_reply_to());
    let channels = pipeline.channel_settings(&m.tenant_id).await?;
    // Agent notifications go to the address their tier names; the tenant's
    // customer endpoints and accounts are for customers.
    let customer_facing = m.recipient.is_none();
    let outbound = Outbound {
        id: &m.id,
        tenant_id: &m.tenant_id,
        channel,
        to,
        customer_id: &m.customer_id,
        from: &from,
        reply_to: &reply_to,
        category: parse_enum(&m.category).unwrap_or(Category::Transactional),
        rendered: &rendered,
        dkim: channels.email.as_ref().and_then(|e| e.dkim.as_ref()),
        twilio: channels.twilio(channel),
        endpoint: channels.endpoint(channel).filter(|_| customer_facing),
    };
    let sent = transport.send(&outbound).await;
    drop(slot);
    match sent {
        Ok(receipt) => {
            writes.sent(
                m,
                &rendered_json,
                &receipt.transport_id,
                receipt.provider_id.as_deref(),
            );
            pipeline.metrics.inc(
                "tidings_messages_total",
                &[
                    ("tenant", &m.tenant_id),
                    ("channel", &m.channel),
                    ("status", "sent"),
                ],
            );
            writes.audit(entry(
                m,
                "dispatch",
                "sent",
                json!({ "transport_id": receipt.transport_id }),
            ));
            store.commit(writes).await?;
            Ok(())
        }
        Err(err) => {
            store.commit(writes).await?;
            let reason = format!("dispatch: {err}");
            let attempt_number = m.attempts + 1;
            let retry = &settings.delivery.retry;
            if err.is_transient() && attempt_number < i64::from(retry.max_attempts) {
                let delay = retry.delay(
                    u32::try_from(attempt_number).unwrap_or(u32::MAX),
                    rand::random::<f64>(),
                );
                let at = pipeline
                    .now()
                    .as_millisecond()
                    .saturating_add(delay.as_millis() as i64);
                store
                    .retry_message(m, at, &reason, Some(&rendered_json))
                    .await?;
                return audit(
                    pipeline,
                    m,
                    "dispatch",
                    "retry",
                    json!({ "error": err.to_string(), "attempt": attempt_number, "next_attempt_at": crate::http::rfc3339(at) }),
                )
                .await;
            }
            // Permanent, or out of attempts: the next fallback channel if
            // the plugin gave one, else a dead letter, kept with every
            // attempt, retried only by hand (`POST /v1/messages/{id}/retry`).
            if fall_back(pipeline, m, &event, &settings, &reason).await? {
                return Ok(());
            }
            let status = "dead";
            store
                .settle_message(
                    m,
                    status,
                    Some(&reason),
                    Some(&rendered_json),
                    Some(("failed", reason.as_str())),
                )
                .await?;
            pipeline.metrics.inc(
                "tidings_messages_total",
                &[
                    ("tenant", &m.tenant_id),
                    ("channel", &m.channel),
                    ("status", status),
                ],
            );
            audit(
                pipeline,
                m,
                "dispatch",
                "dead",
                json!({ "error": err.to_string(), "transient": err.is_transient(), "attempts": attempt_number }),
            )
            .await?;
            report_failure(pipeline, m, &reason).await
        }
    }
}

async fn fail(pipeline: &Pipeline, m: &MessageRow, reason: &str) -> Result<(), PipelineError> {
    pipeline
        .store
        .settle_message(m, "failed", Some(reason), None, None)
        .await?;
    pipeline.metrics.inc(
        "tidings_messages_total",
        &[
            ("tenant", &m.tenant_id),
            ("channel", &m.channel),
            ("status", "failed"),
        ],
    );
    audit(pipeline, m, "render", "failed", json!({ "reason": reason })).await?;
    report_failure(pipeline, m, reason).await
}

/// After `m` failed for good on its channel: move it to the next fallback
/// channel that policy allows now (consent, suppression, quiet hours — a
/// deferral keeps it on that channel until the window ends). Returns whether
/// it moved; `false` when no fallback is left or none is allowed.
async fn fall_back(
    pipeline: &Pipeline,
    m: &MessageRow,
    event: &OrderEvent,
    settings: &crate::settings::TenantSettings,
    reason: &str,
) -> Result<bool, PipelineError> {
    let remaining: Vec<Channel> = serde_json::from_str(&m.fallback_channels).unwrap_or_default();
    let Some((&next, rest)) = remaining.split_first() else {
        return Ok(false);
    };
    let notify = resend(m, next, rest.to_vec());
    let now = pipeline.now();
    let (verdict, _) = pipeline
        .verdict(&m.tenant_id, event, settings, &notify, now)
        .await?;
    let (channel, at) = match verdict.outcome {
        crate::policy::Outcome::Send { channel, at } => (channel, at),
        crate::policy::Outcome::Defer { channel, until, .. } => (channel, until),
        crate::policy::Outcome::Suppress(why) => {
            audit(
                pipeline,
                m,
                "dispatch",
                "no_fallback",
                json!({ "from": m.channel, "error": reason, "fallbacks": remaining, "policy": why.to_string() }),
            )
            .await?;
            return Ok(false);
        }
    };
    let after = crate::pipeline::remaining_fallbacks(&notify, channel);
    let name = crate::pipeline::enum_str(&channel);
    pipeline
        .store
        .fall_back(
            m,
            &name,
            &serde_json::to_string(&after).expect("channels serialise"),
            at.as_millisecond(),
            reason,
        )
        .await?;
    audit(
        pipeline,
        m,
        "dispatch",
        "fallback",
        json!({ "from": m.channel, "to": name, "error": reason, "send_at": at }),
    )
    .await?;
    pipeline.wake_messages();
    Ok(true)
}

/// The queue the host uses for messages that could not be delivered.
pub const DELIVERY_FAILURES_QUEUE: &str = "delivery-failures";

/// A customer message that failed for good opens (or joins) a ticket in
/// `delivery-failures`, so a human sees it. Agent notifications do not, so a
/// broken notification channel cannot feed itself.
async fn report_failure(
    pipeline: &Pipeline,
    m: &MessageRow,
    reason: &str,
) -> Result<(), PipelineError> {
    if m.recipient.is_some() {
        return Ok(());
    }
    let Some(row) = pipeline.store.event(&m.tenant_id, &m.event_id).await? else {
        return Ok(());
    };
    let (_, settings) = pipeline.tenant_cached(&m.tenant_id).await?;
    let reason = format!(
        "message {} ({} via {}) failed: {reason}",
        m.id, m.template, m.channel
    );
    crate::escalation::open(
        pipeline,
        &row,
        &settings,
        &crate::escalation::Opening {
            queue: DELIVERY_FAILURES_QUEUE,
            priority: "normal",
            reason: &reason,
            sla_minutes: None,
            decision_id: None,
            message_id: None,
        },
    )
    .await?;
    Ok(())
}

async fn audit(
    pipeline: &Pipeline,
    m: &MessageRow,
    stage: &str,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), PipelineError> {
    pipeline
        .store
        .audit(entry(m, stage, action, detail))
        .await?;
    Ok(())
}

/// An audit entry by the system about message `m`.
fn entry<'a>(
    m: &'a MessageRow,
    stage: &'a str,
    action: &'a str,
    detail: serde_json::Value,
) -> AuditEntry<'a> {
    AuditEntry {
        tenant_id: &m.tenant_id,
        order_id: Some(&m.order_id),
        event_id: Some(&m.event_id),
        message_id: Some(&m.id),
        stage,
        action,
        actor: "system",
        detail,
    }
}

/// Render `m` with the tenant's templates: `Ok(Err(_))` is a render failure
/// (the message's fault), `Err(_)` a pipeline failure.
pub async fn render_message(
    pipeline: &Pipeline,
    m: &MessageRow,
    event: &OrderEvent,
    settings: &crate::settings::TenantSettings,
) -> Result<Result<Rendered, render::RenderError>, PipelineError> {
    let (tenant, _) = pipeline.tenant_cached(&m.tenant_id).await?;
    let Some(channel) = parse_enum::<Channel>(&m.channel) else {
        return Ok(Err(render::RenderError::MissingPart { part: "channel" }));
    };
    let mut templates = TemplateSet::new();
    for t in pipeline
        .store
        .templates_for_cached(&m.tenant_id, &m.template, &m.channel)
        .await?
    {
        if let Some(c) = parse_enum::<Channel>(&t.channel) {
            templates.insert(
                (t.name, c, t.locale),
                TemplateParts {
                    subject: t.subject,
                    text: t.text,
                    html: t.html,
                },
            );
        }
    }
    crate::escalation::add_builtin_templates(&mut templates, m);
    let data = serde_json::from_str(&m.data).unwrap_or_default();
    let shop = settings.shop.info();
    let request = render::RenderRequest {
        template: &m.template,
        channel,
        locale: m.locale.as_deref(),
        tenant_default_locale: &tenant.default_locale,
        event,
        data: &data,
        shop: &shop,
        now: pipeline.now(),
        fuel: render::DEFAULT_FUEL,
    };
    Ok(pipeline.templates.render(&templates, &request))
}

/// `m` as a notice to send now on `channel`, for policy to judge again at
/// send time (its dedupe key was already accepted, so it is left out).
fn resend(
    m: &MessageRow,
    channel: Channel,
    fallback_channels: Vec<Channel>,
) -> tidings_sdk::action::Notify {
    tidings_sdk::action::Notify {
        channel,
        template: m.template.clone(),
        locale: m.locale.clone(),
        timing: Timing::Now,
        category: parse_enum(&m.category).unwrap_or(Category::Transactional),
        priority: parse_enum(&m.priority).unwrap_or_default(),
        dedupe_key: None,
        cancel_key: m.cancel_key.clone(),
        fallback_channels,
        data: Default::default(),
    }
}

/// Policy again for an approved message. Returns `Some(())` when the message
/// was settled (suppressed) or deferred instead of sent.
async fn recheck_policy(
    pipeline: &Pipeline,
    m: &MessageRow,
    event: &OrderEvent,
    settings: &crate::settings::TenantSettings,
) -> Result<Option<()>, PipelineError> {
    let Some(channel) = parse_enum::<Channel>(&m.channel) else {
        return Ok(None);
    };
    let notify = resend(m, channel, Vec::new());
    let now = pipeline.now();
    // The newest event of the order carries the customer's current consents.
    let latest = pipeline
        .store
        .order_events(&m.tenant_id, &m.order_id)
        .await?;
    let latest: Option<OrderEvent> = latest
        .last()
        .and_then(|r| serde_json::from_str(&r.body).ok());
    let event = latest.as_ref().unwrap_or(event);
    let (verdict, _) = pipeline
        .verdict(&m.tenant_id, event, settings, &notify, now)
        .await?;
    match verdict.outcome {
        crate::policy::Outcome::Send { channel: c, .. } if c == channel => Ok(None),
        crate::policy::Outcome::Send { .. } => {
            fail(
                pipeline,
                m,
                "the approved channel is no longer allowed for this customer",
            )
            .await?;
            Ok(Some(()))
        }
        crate::policy::Outcome::Defer { until, reason, .. } => {
            pipeline
                .store
                .defer_message(&m.id, until.as_millisecond(), &reason.to_string())
                .await?;
            audit(
                pipeline,
                m,
                "policy",
                "defer",
                json!({ "reason": reason.to_string(), "until": until }),
            )
            .await?;
            Ok(Some(()))
        }
        crate::policy::Outcome::Suppress(reason) => {
            let text = reason.to_string();
            pipeline
                .store
                .settle_message(m, "suppressed", Some(&text), None, None)
                .await?;
            audit(
                pipeline,
                m,
                "policy",
                "suppress",
                json!({ "reason": text, "after": "approval" }),
            )
            .await?;
            Ok(Some(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_read_for_several_messages_is_copied_for_all_but_the_last() {
        let event = |id: &str| EventRow {
            id: id.into(),
            tenant_id: "t1".into(),
            external_id: id.into(),
            idempotency_key: id.into(),
            order_id: "o1".into(),
            kind: "order_created".into(),
            occurred_at: 0,
            received_at: 0,
            body: "{}".into(),
            status: "processed".into(),
        };
        let mut events: HashMap<String, (EventRow, usize)> = HashMap::from([
            ("e1".to_owned(), (event("e1"), 2)),
            ("e2".to_owned(), (event("e2"), 1)),
        ]);
        let first = take_event(&mut events, "e1").map(|e| e.id);
        assert_eq!(first.as_deref(), Some("e1"));
        assert_eq!(events.get("e1").map(|(_, uses)| *uses), Some(1));
        let last = take_event(&mut events, "e1").map(|e| e.id);
        assert_eq!(last.as_deref(), Some("e1"));
        assert!(
            !events.contains_key("e1"),
            "the last message takes the event itself"
        );
        assert!(take_event(&mut events, "e1").is_none());
        assert!(take_event(&mut events, "missing").is_none());
        assert_eq!(
            take_event(&mut events, "e2").map(|e| e.id).as_deref(),
            Some("e2")
        );
        assert!(events.is_empty());
    }

    #[test]
    fn timings_resolve_against_now_and_never_into_the_past() {
        let now: Timestamp = "2026-11-23T10:00:00Z".parse().expect("valid");
        assert_eq!(send_at(&Timing::Now, now), now);
        assert_eq!(
            send_at(&Timing::After { seconds: 3_600 }, now),
            "2026-11-23T11:00:00Z".parse::<Timestamp>().expect("valid")
        );
        let past: Timestamp = "2026-11-01T00:00:00Z".parse().expect("valid");
        assert_eq!(send_at(&Timing::At { at: past }, now), now);
    }

    #[test]
    fn the_handoff_has_room_only_with_a_worker_and_room_at_the_destination() {
        let handoff = Handoff::default();
        assert_eq!(
            handoff.reserve("t1", "email"),
            None,
            "no worker: messages wait in the table"
        );
        handoff.attach("w1");
        for _ in 0..PER_DESTINATION {
            assert_eq!(handoff.reserve("t1", "email").as_deref(), Some("w1"));
        }
        assert_eq!(
            handoff.reserve("t1", "email"),
            None,
            "the destination is full"
        );
        assert_eq!(
            handoff.reserve("t1", "sms").as_deref(),
            Some("w1"),
            "another destination has room"
        );
        handoff.release("t1", "email");
        assert_eq!(
            handoff.reserve("t1", "email").as_deref(),
            Some("w1"),
            "room given back"
        );

        // The handoff as a whole is bounded too.
        let mut reserved = PER_DESTINATION + 1;
        let mut tenant = 2;
        while reserved < HANDOFF_ROOM {
            if handoff.reserve(&format!("t{tenant}"), "email").is_some() {
                reserved += 1;
            } else {
                tenant += 1;
            }
        }
        assert_eq!(
            handoff.reserve("other", "email"),
            None,
            "the handoff is full"
        );
        assert!(handoff.take().is_empty());
    }

    #[test]
    fn messages_leased_ahead_go_before_handed_over_ones_and_wait_for_a_place() {
        let handoff = Handoff::default();
        handoff.attach("w1");
        let email = ("t1".to_owned(), "email".to_owned());
        handoff.busy.hold(&email);
        assert_eq!(
            handoff.reserve("t1", "email"),
            None,
            "a destination holding a leased message takes none handed over"
        );
        assert!(handoff.busy.promote(&email), "a free place: it starts");
        assert!(!handoff.busy.promote(&email), "nothing more is held");
        assert_eq!(handoff.reserve("t1", "email").as_deref(), Some("w1"));

        // With every place taken, held messages wait, and come first.
        for _ in 2..PER_DESTINATION {
            assert!(handoff.reserve("t1", "email").is_some());
        }
        handoff.busy.hold(&email);
        assert!(!handoff.busy.promote(&email), "no free place");
        handoff.release("t1", "email");
        assert_eq!(handoff.reserve("t1", "email"), None);
        assert!(handoff.busy.promote(&email), "the place came free");
        assert_eq!(handoff.busy.ahead(&email), 0);

        // Leased again once half of what it holds ahead has started.
        for _ in 0..LEASED_AHEAD {
            handoff.busy.hold(&email);
        }
        let room_of_email = |handoff: &Handoff| {
            let room = handoff.begin_lease();
            handoff.end_lease();
            room.into_iter()
                .find(|(tenant, channel, _)| (tenant, channel) == (&email.0, &email.1))
                .map(|(_, _, room)| room)
        };
        assert_eq!(room_of_email(&handoff), Some(0));
        for _ in 0..LEASED_AHEAD / 2 {
            handoff.busy.unhold("t1", "email");
        }
        assert_eq!(
            room_of_email(&handoff),
            Some((LEASED_AHEAD / 2) as i64),
            "every place taken and half held: room for the other half"
        );
    }
}
