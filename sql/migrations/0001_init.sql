-- 0001_init: the records of the platform.
--
-- Portable between PostgreSQL and SQLite. Ids are TEXT, times are BIGINT
-- Unix milliseconds (UTC). The migration runner replaces two tokens with the
-- dialect's spelling before running this file:
--   {{AUTO_ID}}  an auto-incrementing 64-bit primary key
--   {{BLOB}}     a binary string

CREATE TABLE tenants (
    id          TEXT    PRIMARY KEY CHECK (id <> ''),
    name        TEXT    NOT NULL CHECK (name <> ''),
    disabled    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);

CREATE INDEX tenants_by_created ON tenants (created_at, id);

CREATE TABLE users (
    id          TEXT   PRIMARY KEY CHECK (id <> ''),
    tenant_id   TEXT   NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT   NOT NULL CHECK (name <> ''),
    role        TEXT   NOT NULL CHECK (role <> ''),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    -- Lets api_keys reference (tenant, user) pairs, so that a key can only
    -- belong to a user of its own tenant.
    UNIQUE (tenant_id, id)
);

CREATE INDEX users_by_tenant ON users (tenant_id, created_at, id);

CREATE TABLE api_keys (
    id            TEXT     PRIMARY KEY CHECK (id <> ''),
    tenant_id     TEXT     NOT NULL,
    user_id       TEXT     NOT NULL,
    name          TEXT     NOT NULL,
    prefix        TEXT     NOT NULL,
    hash          {{BLOB}} NOT NULL UNIQUE,
    created_at    BIGINT   NOT NULL,
    last_used_at  BIGINT,
    revoked_at    BIGINT,
    FOREIGN KEY (tenant_id, user_id) REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE INDEX api_keys_by_user ON api_keys (tenant_id, user_id, created_at, id);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at, id);

CREATE TABLE agent_sessions (
    id                TEXT   PRIMARY KEY CHECK (id <> ''),
    tenant_id         TEXT   NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id           TEXT   NOT NULL,
    name              TEXT   NOT NULL,
    agent_type        TEXT   NOT NULL,
    state             TEXT   NOT NULL,
    instance          TEXT   NOT NULL,
    created_at        BIGINT NOT NULL,
    last_activity_at  BIGINT NOT NULL,
    stopped_at        BIGINT
);

CREATE INDEX agent_sessions_by_tenant ON agent_sessions (tenant_id, created_at, id);
CREATE INDEX agent_sessions_by_user ON agent_sessions (tenant_id, user_id, created_at, id);

CREATE TABLE transcript_messages (
    session_id  TEXT   NOT NULL REFERENCES agent_sessions (id) ON DELETE CASCADE,
    message_id  BIGINT NOT NULL CHECK (message_id >= 0),
    role        TEXT   NOT NULL,
    content     TEXT   NOT NULL,
    sent_at     BIGINT NOT NULL,
    PRIMARY KEY (session_id, message_id)
);

-- tenant_id is deliberately not a foreign key: the record of what was done
-- to a tenant outlives the tenant.
CREATE TABLE audit_log (
    id           {{AUTO_ID}},
    occurred_at  BIGINT NOT NULL,
    tenant_id    TEXT   NOT NULL,
    actor_id     TEXT   NOT NULL,
    action       TEXT   NOT NULL,
    target       TEXT   NOT NULL,
    detail       TEXT   NOT NULL
);

CREATE INDEX audit_log_by_tenant ON audit_log (tenant_id, occurred_at, id);
