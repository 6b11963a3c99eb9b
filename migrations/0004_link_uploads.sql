-- Which upload link a multipart upload belongs to (NULL: an ordinary S3 upload). The link's
-- slot is taken in the transaction that creates the row and given back only by the statement
-- that really deletes it (abort, expiry, revocation), so it is released exactly once.
ALTER TABLE uploads ADD COLUMN link_id TEXT;

CREATE INDEX uploads_by_link ON uploads(link_id) WHERE link_id IS NOT NULL;

-- Uploads begun by a link page before this column existed carry the link's id as user metadata
-- (`upload-link`) and were created with the link's own key in the link's bucket.
UPDATE uploads SET link_id = (
    SELECT l.id FROM links l, json_each(uploads.headers, '$.headers.meta') m
    WHERE json_extract(m.value, '$[0]') = 'upload-link'
      AND json_extract(m.value, '$[1]') = l.id
      AND l.bucket = uploads.bucket AND l.access_key = uploads.owner
);
