-- Delivery lanes: the worker delivers each target's events in a lane of its own, so that a
-- receiver that never answers holds back only its own events. A lane reads its target's pending
-- deliveries by next attempt; `deliveries_pending (next_at)` would make a healthy target's read
-- walk past every pending row of a silent one (its whole backlog) first. The same number of
-- indexes as before is updated per outbox insert.
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_lane ON deliveries (target, next_at) WHERE state = 'pending';
