-- Resilience: breaker state, sustained-failure tracking, per-destination attempt history,
-- and the index that finds the head of an ordered destination.

ALTER TABLE destinations ADD COLUMN breaker TEXT;            -- JSON of herald_core::breaker::Breaker
ALTER TABLE destinations ADD COLUMN failing_since BIGINT;   -- first failure since the last success
ALTER TABLE destinations ADD COLUMN last_success_at BIGINT;

ALTER TABLE attempts ADD COLUMN destination TEXT;
UPDATE attempts SET destination = (SELECT destination FROM deliveries WHERE deliveries.id = attempts.delivery_id);
CREATE INDEX attempts_destination ON attempts(destination, started_at);

CREATE INDEX deliveries_open ON deliveries(destination, created_at, id) WHERE status IN ('pending', 'in_flight');
