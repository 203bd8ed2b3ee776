-- 0004_tenant_config: each tenant's own settings (limits, allowed agents,
-- quota, flag overrides) as one JSON document with a version, and the
-- global feature flags.

CREATE TABLE tenant_config (
    tenant_id   TEXT    PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    config      TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE TABLE feature_flags (
    name        TEXT    PRIMARY KEY CHECK (name <> ''),
    enabled     BOOLEAN NOT NULL,
    percent     INTEGER,
    updated_at  BIGINT  NOT NULL
);
