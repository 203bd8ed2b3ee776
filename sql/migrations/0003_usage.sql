-- 0003_usage: usage counts per tenant, user, UTC day and metric, flushed
-- here from Redis (or memory) by package usage; see usage.DB.
--
-- tenant_id is deliberately not a foreign key: usage is a billing record
-- that outlives its tenant (like the audit log), and a flush of counts
-- made just before a tenant was deleted must not fail forever.

CREATE TABLE usage_counts (
    tenant_id  TEXT   NOT NULL CHECK (tenant_id <> ''),
    day        TEXT   NOT NULL CHECK (length(day) = 10), -- 'YYYY-MM-DD', UTC
    user_id    TEXT   NOT NULL,                         -- '' for no user
    metric     TEXT   NOT NULL CHECK (metric <> ''),
    count      BIGINT NOT NULL CHECK (count >= 0),
    PRIMARY KEY (tenant_id, day, user_id, metric)
);

-- Reports across tenants select by day.
CREATE INDEX usage_counts_by_day ON usage_counts (day, tenant_id);

-- The last flush applied for each tenant (usage.Flush.Seq). A flush's rows
-- and its Seq are written in one transaction, and only when the Seq is
-- above last_seq: a flush retried after a crash between the commit and the
-- cleanup in Redis changes nothing the second time.
CREATE TABLE usage_flush_marks (
    tenant_id   TEXT   PRIMARY KEY CHECK (tenant_id <> ''),
    last_seq    BIGINT NOT NULL CHECK (last_seq > 0),
    updated_at  BIGINT NOT NULL
);
