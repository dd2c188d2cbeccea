-- The last HTTP request of a failed attempt and the answer's status and headers (JSON,
-- secrets masked), so an operator can see in the dashboard why a receiver refused it.
-- NULL for delivered attempts (nothing to debug, and the hot path writes less) and for
-- kinds that do not speak HTTP.
ALTER TABLE attempts ADD COLUMN exchange TEXT;
