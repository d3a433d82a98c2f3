-- A plugin's component bytes live in a table of their own. In `plugins`
-- they came before `created_at`, so SQLite walked the whole blob's chain of
-- overflow pages (a 300 KB component is ~75 pages) for every row read that
-- named `created_at`: ~100 µs a plugin read instead of ~6 µs, and listing
-- the plugins of thousands of tenants read every component. Only the
-- loader reads the bytes, and only when the compiled cache lacks them.
CREATE TABLE plugin_components (
    plugin_id TEXT PRIMARY KEY REFERENCES plugins(id),
    component BLOB NOT NULL
);
INSERT INTO plugin_components (plugin_id, component) SELECT id, component FROM plugins;
ALTER TABLE plugins DROP COLUMN component;
