-- The message lease walks due messages in send time order and skips the
-- destinations (tenant, channel) that have no room; with the destination in
-- the index it does so without reading each skipped row. Messages whose
-- sending lease ran out are found by lease end.
DROP INDEX messages_due;
CREATE INDEX messages_due ON messages (status, send_at, tenant_id, channel);
CREATE INDEX messages_lease ON messages (status, lease_until);
