-- The delivery worker's queue, read in an order an index gives. `deliveries_due (state, next_at)`
-- made the worker's read sort every pending due delivery to take the first few: with a backlog
-- (a burst of uploads, a slow receiver) each read cost O(backlog log backlog), 23 ms for 5,000,
-- and the worker fell further behind while it ate the uploads' CPU. Pending deliveries by their
-- next attempt (and id, which SQLite appends) let the read stop after the batch it takes, and
-- never visits deliveries waiting for a retry; delivered and dead rows are not in it at all.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_pending ON deliveries (next_at) WHERE state = 'pending';
