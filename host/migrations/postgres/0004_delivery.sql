-- Delivery: the channels left to try when one fails for good, the provider's
-- id of a sent message (named by its status callbacks), and each tenant's
-- channel settings (provider accounts, endpoints, keys; never read back).

ALTER TABLE messages ADD COLUMN fallback_channels TEXT NOT NULL DEFAULT '[]';
ALTER TABLE messages ADD COLUMN provider_id TEXT;
CREATE INDEX messages_provider ON messages (tenant_id, provider_id);

CREATE TABLE channel_settings (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    channel    TEXT NOT NULL,
    config     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, channel)
);
