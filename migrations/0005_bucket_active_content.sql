-- Buckets whose owner lets browsers run what they serve: HTML, SVG, XML and scripts are then
-- served without `Content-Security-Policy: sandbox` (every object keeps `nosniff`).
ALTER TABLE buckets ADD COLUMN active_content INTEGER NOT NULL DEFAULT 0;

-- Admin keys the server installed itself at start (from POSTGATE_ACCESS_KEY / the config file,
-- or generated): a different configured key replaces them. Every admin key so far came from there.
ALTER TABLE access_keys ADD COLUMN startup INTEGER NOT NULL DEFAULT 0;
UPDATE access_keys SET startup = 1 WHERE is_admin = 1;
