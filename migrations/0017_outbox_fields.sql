-- The outbox row keeps its event's fields, not its rendered record. The S3 record (~1.1 KB of
-- JSON, most of it the same on every event) was built and stored by every upload a target
-- wants, inside the commit the upload waits for; its fields are ~250 bytes, and the delivery
-- worker renders the record from them when it sends it (`events::message::render`).
-- `record` stays: the rows written before this migration keep their rendered record and are sent
-- from it as before (byte for byte); a row written since has `record` = '' and these columns.
-- `size` is NULL for a removal (its record has no size, eTag nor metadata); `metadata` is the
-- object's `x-amz-meta-*` pairs as a JSON array of [name, value], NULL when it has none.
ALTER TABLE outbox ADD COLUMN owner TEXT;
ALTER TABLE outbox ADD COLUMN size INTEGER;
ALTER TABLE outbox ADD COLUMN etag TEXT;
ALTER TABLE outbox ADD COLUMN content_type TEXT;
ALTER TABLE outbox ADD COLUMN detected_type TEXT;
ALTER TABLE outbox ADD COLUMN metadata TEXT;
ALTER TABLE outbox ADD COLUMN principal TEXT;
ALTER TABLE outbox ADD COLUMN source_ip TEXT;
ALTER TABLE outbox ADD COLUMN request_id TEXT;
ALTER TABLE outbox ADD COLUMN link_id TEXT;
