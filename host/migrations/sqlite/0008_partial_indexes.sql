-- Indexes hold only the rows their queries look for. Most messages are
-- sent, most events processed, most messages are transactional and carry no
-- cancel key or provider id; every row in an index it is never looked up in
-- cost a B-tree update on each insert or status change, and pages in each
-- commit. The queries name the same conditions, so they use these indexes.
DROP INDEX events_pending;
CREATE INDEX events_pending ON events (received_at) WHERE status = 'received';
DROP INDEX messages_due;
CREATE INDEX messages_due ON messages (send_at, tenant_id, channel) WHERE status = 'scheduled';
DROP INDEX messages_lease;
CREATE INDEX messages_lease ON messages (lease_until) WHERE status = 'sending';
DROP INDEX messages_cancel;
CREATE INDEX messages_cancel ON messages (tenant_id, cancel_key) WHERE cancel_key IS NOT NULL;
DROP INDEX messages_provider;
CREATE INDEX messages_provider ON messages (tenant_id, provider_id) WHERE provider_id IS NOT NULL;
DROP INDEX messages_customer;
CREATE INDEX messages_marketing ON messages (tenant_id, customer_id, created_at) WHERE category = 'marketing';
