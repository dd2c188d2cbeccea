-- Cluster-wide state: a destination's token bucket lives in its row, so a rate limit holds
-- for every node together (spent inside the claim transaction, under the row lock).

ALTER TABLE destinations ADD COLUMN bucket TEXT;            -- JSON of herald_core::rate_limit::TokenBucket
