-- Operators, the audit trail, console sessions and bulk replays
-- (docs/DESIGN.md "Operators and the audit trail").

-- An operator sees and acts on every tenant. Like a tenant's, its token is
-- shown once and stored only as its SHA-256. Names are never reused.
CREATE TABLE operators (
    name        text PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);

-- Every action that changes something on an operator's or a tenant's say:
-- who, when, what, on which runs, and why. Rows are only ever inserted.
CREATE TABLE audit_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    -- `operator:NAME`, `tenant:NAME` or `cli:USER`.
    actor   text NOT NULL,
    -- The tenant acted on; NULL for an action on no tenant's data
    -- (creating an operator).
    tenant  text,
    action  text NOT NULL,
    target  text NOT NULL,
    reason  text NOT NULL CHECK (length(btrim(reason)) > 0),
    -- The runs it touched (shown in each run's history).
    runs    uuid[] NOT NULL DEFAULT '{}',
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_tenant ON audit_log (tenant, id);
CREATE INDEX audit_log_runs ON audit_log USING gin (runs);

-- A signed-in browser: the cookie holds a random id, stored here only as
-- its SHA-256, with the form token that guards every change.
CREATE TABLE console_sessions (
    id_hash     bytea PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('tenant', 'operator')),
    name        text NOT NULL,
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- A bulk replay: the dead letters it selected, at a rate, with progress
-- that any process can read and an abort that any process can ask for.
CREATE TABLE replay_jobs (
    id               uuid PRIMARY KEY,
    actor            text NOT NULL,
    tenant           text,
    reason           text NOT NULL CHECK (length(btrim(reason)) > 0),
    selection        jsonb NOT NULL,
    targets          uuid[] NOT NULL,
    patch            jsonb,
    rate             double precision,
    state            text NOT NULL DEFAULT 'running'
                       CHECK (state IN ('running', 'done', 'aborted', 'failed')),
    done             integer NOT NULL DEFAULT 0,
    replayed         integer NOT NULL DEFAULT 0,
    skipped          integer NOT NULL DEFAULT 0,
    not_replayable   integer NOT NULL DEFAULT 0,
    error            text,
    abort_requested  boolean NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz
);
CREATE INDEX replay_jobs_tenant ON replay_jobs (tenant, created_at);
