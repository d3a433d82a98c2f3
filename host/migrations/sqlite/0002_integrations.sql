-- Commerce platform integrations: the tenant's webhook secrets, and the last
-- state of each platform order (to derive events from status transitions and
-- to hold back events older than what the order already reached).

CREATE TABLE integrations (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    platform   TEXT NOT NULL,
    secret     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, platform)
);

CREATE TABLE platform_orders (
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    platform        TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    platform_status TEXT,
    snapshot        TEXT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, platform, order_id)
);
