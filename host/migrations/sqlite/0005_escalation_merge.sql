-- Escalations that merge atomically and timers that survive a crash.
--
-- At most one open (or acknowledged) ticket per tenant, order and queue, so
-- two escalations of one order racing each other merge instead of opening
-- two tickets; approval tickets (one per held message) are left out. Tickets
-- duplicated before this index existed are folded into the oldest one first:
-- their reasons are appended to it, the fold is audited, and they are
-- resolved.
--
-- A worker claims a due ticket with a lease (`lease_until`) instead of
-- clearing its timer, so a worker that dies mid-step leaves the ticket due
-- again once the lease runs out. A held message's expiry (`expires_at`) is
-- its own timer, apart from the approval queue's ladder (`next_at`).

ALTER TABLE escalations ADD COLUMN lease_until BIGINT;
ALTER TABLE escalations ADD COLUMN expires_at BIGINT;
CREATE INDEX escalations_expiry ON escalations (status, expires_at);

UPDATE escalations
SET reason = reason || char(10) || (
        SELECT group_concat(d.reason, char(10) ORDER BY d.id) FROM escalations d
        WHERE d.tenant_id = escalations.tenant_id AND d.order_id = escalations.order_id
          AND d.queue = escalations.queue AND d.message_id IS NULL
          AND d.status IN ('open', 'acknowledged') AND d.id > escalations.id),
    updated_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000
WHERE message_id IS NULL AND status IN ('open', 'acknowledged')
  AND NOT EXISTS (
      SELECT 1 FROM escalations o
      WHERE o.tenant_id = escalations.tenant_id AND o.order_id = escalations.order_id
        AND o.queue = escalations.queue AND o.message_id IS NULL
        AND o.status IN ('open', 'acknowledged') AND o.id < escalations.id)
  AND EXISTS (
      SELECT 1 FROM escalations d
      WHERE d.tenant_id = escalations.tenant_id AND d.order_id = escalations.order_id
        AND d.queue = escalations.queue AND d.message_id IS NULL
        AND d.status IN ('open', 'acknowledged') AND d.id > escalations.id);

INSERT INTO audit_log (tenant_id, order_id, event_id, message_id, stage, action, actor, detail, at)
SELECT t.tenant_id, t.order_id, t.event_id, NULL, 'escalation', 'merged', 'migration',
       json_object('ticket', t.id, 'queue', t.queue, 'into', (
           SELECT MIN(o.id) FROM escalations o
           WHERE o.tenant_id = t.tenant_id AND o.order_id = t.order_id AND o.queue = t.queue
             AND o.message_id IS NULL AND o.status IN ('open', 'acknowledged'))),
       CAST(strftime('%s', 'now') AS INTEGER) * 1000
FROM escalations t
WHERE t.message_id IS NULL AND t.status IN ('open', 'acknowledged')
  AND EXISTS (
      SELECT 1 FROM escalations o
      WHERE o.tenant_id = t.tenant_id AND o.order_id = t.order_id AND o.queue = t.queue
        AND o.message_id IS NULL AND o.status IN ('open', 'acknowledged') AND o.id < t.id);

UPDATE escalations
SET status = 'resolved', next_at = NULL, updated_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000
WHERE message_id IS NULL AND status IN ('open', 'acknowledged')
  AND EXISTS (
      SELECT 1 FROM escalations o
      WHERE o.tenant_id = escalations.tenant_id AND o.order_id = escalations.order_id
        AND o.queue = escalations.queue AND o.message_id IS NULL
        AND o.status IN ('open', 'acknowledged') AND o.id < escalations.id);

CREATE UNIQUE INDEX escalations_one_open ON escalations (tenant_id, order_id, queue)
    WHERE status IN ('open', 'acknowledged') AND message_id IS NULL;
