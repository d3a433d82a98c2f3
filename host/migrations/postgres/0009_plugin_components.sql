-- A plugin's component bytes live in a table of their own, as on SQLite
-- (where they made every read of a plugin row walk the blob's overflow
-- pages); PostgreSQL stores them out of line either way, and one schema
-- keeps the two backends' queries the same.
CREATE TABLE plugin_components (
    plugin_id TEXT PRIMARY KEY REFERENCES plugins(id),
    component BYTEA NOT NULL
);
INSERT INTO plugin_components (plugin_id, component) SELECT id, component FROM plugins;
ALTER TABLE plugins DROP COLUMN component;
