-- Dashboard queries (issue 8): every search and count the /ui pages make is an index range.

-- Deliveries by idempotency key: messages found by key, then deliveries by message_id.
CREATE INDEX messages_idempotency ON messages(idempotency_key) WHERE idempotency_key IS NOT NULL;
-- Messages accepted in the last hour (overview); also serves pruning by age.
CREATE INDEX messages_created ON messages(created_at);
-- Deliveries of one destination in one status, newest first (the deliveries search with
-- both filters; the DLQ of one queue).
CREATE INDEX deliveries_dest_status ON deliveries(destination, status, id);
