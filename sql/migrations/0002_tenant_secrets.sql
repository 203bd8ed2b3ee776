-- 0002_tenant_secrets: secrets a tenant's agents receive as environment
-- variables. Values are sealed (AES-256-GCM) by the application.

CREATE TABLE tenant_secrets (
    tenant_id   TEXT     NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT     NOT NULL CHECK (name <> ''),
    sealed      {{BLOB}} NOT NULL,
    updated_at  BIGINT   NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
