-- Platform deliveries about an order Tidings has not seen yet. Shopify does
-- not guarantee delivery order: a `fulfillments/create` can arrive before the
-- `orders/create` it belongs to, and its body does not carry the order. The
-- verified delivery is kept as received (topic, the headers the mapping
-- reads, raw body) and mapped again, in order, once the order's snapshot
-- arrives; then the row is deleted.

CREATE TABLE platform_pending (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    platform    TEXT NOT NULL,
    order_id    TEXT NOT NULL,
    dedupe_key  TEXT NOT NULL,
    topic       TEXT NOT NULL,
    headers     TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    UNIQUE (tenant_id, platform, dedupe_key)
);
CREATE INDEX platform_pending_order ON platform_pending (tenant_id, platform, order_id, received_at);
CREATE INDEX platform_pending_age ON platform_pending (tenant_id, platform, received_at);

-- Every delivery handled, by the platform's delivery id (Shopify's
-- X-Shopify-Event-Id / X-Shopify-Webhook-Id with the topic, WooCommerce's
-- X-WC-Webhook-Delivery-ID), so a redelivery is dropped before it is mapped
-- again: mapped against a newer snapshot, an old body could overwrite it
-- with an older state. Kept 30 days (platforms retry for hours).
CREATE TABLE platform_deliveries (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    platform     TEXT NOT NULL,
    delivery_key TEXT NOT NULL,
    event_id     TEXT,
    outcome      TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, platform, delivery_key)
);
CREATE INDEX platform_deliveries_age ON platform_deliveries (tenant_id, platform, received_at);
