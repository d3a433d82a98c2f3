-- Tidings schema, PostgreSQL. Timestamps are milliseconds since the Unix epoch (UTC);
-- JSON documents are TEXT.

CREATE TABLE tenants (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    timezone       TEXT NOT NULL,
    default_locale TEXT NOT NULL,
    settings       TEXT NOT NULL DEFAULT '{}',
    created_at     BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT REFERENCES tenants(id),
    scope      TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE plugins (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT REFERENCES tenants(id),
    name       TEXT NOT NULL,
    version    TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    contract   TEXT NOT NULL,
    info       TEXT NOT NULL,
    component  BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX plugins_owner_name_version ON plugins (COALESCE(tenant_id, ''), name, version);

CREATE TABLE plugin_installs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    plugin_id   TEXT NOT NULL REFERENCES plugins(id),
    plugin_name TEXT NOT NULL,
    config      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (tenant_id, plugin_name)
);

CREATE TABLE templates (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    name       TEXT NOT NULL,
    channel    TEXT NOT NULL,
    locale     TEXT NOT NULL,
    subject    TEXT,
    text       TEXT,
    html       TEXT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, name, channel, locale)
);

CREATE TABLE events (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    external_id     TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    order_id        TEXT NOT NULL,
    kind            TEXT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    received_at     BIGINT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,
    lease_until     BIGINT,
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX events_order ON events (tenant_id, order_id, received_at);
CREATE INDEX events_pending ON events (status, received_at);

CREATE TABLE decisions (
    id             TEXT PRIMARY KEY,
    tenant_id      TEXT NOT NULL REFERENCES tenants(id),
    event_id       TEXT NOT NULL REFERENCES events(id),
    plugin_id      TEXT NOT NULL,
    plugin_name    TEXT NOT NULL,
    plugin_version TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    detail         TEXT NOT NULL,
    fuel           BIGINT NOT NULL,
    duration_us    BIGINT NOT NULL,
    created_at     BIGINT NOT NULL
);
CREATE INDEX decisions_event ON decisions (event_id);

CREATE TABLE messages (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    event_id      TEXT NOT NULL REFERENCES events(id),
    decision_id   TEXT NOT NULL,
    order_id      TEXT NOT NULL,
    customer_id   TEXT NOT NULL,
    channel       TEXT NOT NULL,
    template      TEXT NOT NULL,
    locale        TEXT,
    category      TEXT NOT NULL,
    priority      TEXT NOT NULL,
    dedupe_key    TEXT,
    cancel_key    TEXT,
    data          TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_reason TEXT,
    send_at       BIGINT NOT NULL,
    attempts      BIGINT NOT NULL DEFAULT 0,
    lease_owner   TEXT,
    lease_until   BIGINT,
    rendered      TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX messages_due ON messages (status, send_at);
CREATE INDEX messages_order ON messages (tenant_id, order_id, created_at);
CREATE INDEX messages_dedupe ON messages (tenant_id, dedupe_key);
CREATE INDEX messages_cancel ON messages (tenant_id, cancel_key);
CREATE INDEX messages_customer ON messages (tenant_id, customer_id, category, created_at);

CREATE TABLE delivery_attempts (
    id         TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    message_id TEXT NOT NULL REFERENCES messages(id),
    attempt    BIGINT NOT NULL,
    at         BIGINT NOT NULL,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE INDEX delivery_attempts_message ON delivery_attempts (message_id, attempt);

CREATE TABLE escalations (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    order_id    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    decision_id TEXT,
    queue       TEXT NOT NULL,
    priority    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    sla_minutes BIGINT,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX escalations_open ON escalations (tenant_id, order_id, queue, status);

CREATE TABLE suppressions (
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    channel    TEXT NOT NULL,
    address    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, channel, address)
);

CREATE TABLE cancel_keys (
    tenant_id    TEXT NOT NULL REFERENCES tenants(id),
    cancel_key   TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    cancelled_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, cancel_key)
);

CREATE TABLE audit_log (
    seq        BIGSERIAL PRIMARY KEY,
    tenant_id  TEXT NOT NULL,
    order_id   TEXT,
    event_id   TEXT,
    message_id TEXT,
    stage      TEXT NOT NULL,
    action     TEXT NOT NULL,
    actor      TEXT NOT NULL,
    detail     TEXT NOT NULL,
    at         BIGINT NOT NULL
);
CREATE INDEX audit_order ON audit_log (tenant_id, order_id, seq);
