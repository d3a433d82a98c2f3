-- Escalation ladders and approvals: a ticket climbs tiers on a timer kept in
-- the row (so it survives restarts); approval tickets point at their held
-- message; agent notifications carry an explicit recipient.

ALTER TABLE escalations ADD COLUMN tier BIGINT NOT NULL DEFAULT 0;
ALTER TABLE escalations ADD COLUMN next_at BIGINT;
ALTER TABLE escalations ADD COLUMN breached BIGINT NOT NULL DEFAULT 0;
ALTER TABLE escalations ADD COLUMN message_id TEXT;
CREATE INDEX escalations_due ON escalations (status, next_at);

CREATE TABLE escalation_notes (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    escalation_id TEXT NOT NULL REFERENCES escalations(id),
    author        TEXT NOT NULL,
    body          TEXT NOT NULL,
    at            BIGINT NOT NULL
);
CREATE INDEX escalation_notes_ticket ON escalation_notes (escalation_id, at);

ALTER TABLE messages ADD COLUMN recipient TEXT;
ALTER TABLE messages ADD COLUMN approved_by TEXT;
