-- netra core schema: tenants, threads, messages, runs, phase history, dedup,
-- dead-letter index. See DESIGN.md for the states and invariants.

CREATE TABLE tenants (
    name        text PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    amqp_user   text UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE threads (
    id          uuid PRIMARY KEY,
    tenant      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX threads_tenant ON threads (tenant, created_at);

CREATE TABLE runs (
    id                  uuid PRIMARY KEY,
    tenant              text NOT NULL,
    thread_id           uuid NOT NULL REFERENCES threads (id),
    correlation_id      text NOT NULL,
    request_message_id  text,
    reply_to            text,
    request             jsonb NOT NULL,
    status              text NOT NULL CHECK (status IN
                          ('queued', 'running', 'retrying', 'completed',
                           'needs_input', 'dead_lettered', 'cancelled')),
    phase               text,
    attempt             integer NOT NULL DEFAULT 1,
    replay              integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz,
    result              jsonb,
    error               text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
);
CREATE UNIQUE INDEX runs_request_idempotency ON runs (tenant, request_message_id)
    WHERE request_message_id IS NOT NULL;
CREATE INDEX runs_tenant_created ON runs (tenant, created_at, id);
CREATE INDEX runs_correlation ON runs (tenant, correlation_id);
CREATE INDEX runs_retry_due ON runs (next_attempt_at) WHERE status = 'retrying';

-- The conversation: user messages and agent reports.
CREATE TABLE messages (
    id          bigserial PRIMARY KEY,
    thread_id   uuid NOT NULL REFERENCES threads (id),
    run_id      uuid REFERENCES runs (id),
    role        text NOT NULL CHECK (role IN ('user', 'agent')),
    content     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_thread ON messages (thread_id, id);

-- Every state transition of a run; rows are only ever inserted.
CREATE TABLE run_history (
    id           bigserial PRIMARY KEY,
    run_id       uuid NOT NULL REFERENCES runs (id),
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    from_status  text,
    to_status    text NOT NULL,
    phase        text,
    attempt      integer,
    replay       integer NOT NULL DEFAULT 0,
    error        text,
    detail       jsonb
);
CREATE INDEX run_history_run ON run_history (run_id, id);

-- Every attempt of every phase: input, output, error, timings, worker.
CREATE TABLE phase_attempts (
    id           bigserial PRIMARY KEY,
    run_id       uuid NOT NULL REFERENCES runs (id),
    phase        text NOT NULL,
    attempt      integer NOT NULL,
    replay       integer NOT NULL,
    message_id   text NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN
                   ('succeeded', 'failed_transient', 'failed_permanent', 'discarded')),
    input        jsonb,
    output       jsonb,
    error_class  text,
    error        text,
    worker_id    text NOT NULL,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL
);
CREATE INDEX phase_attempts_run ON phase_attempts (run_id, id);

-- The output a phase produced for a run; a replay of the phase replaces it.
CREATE TABLE phase_outputs (
    run_id      uuid NOT NULL REFERENCES runs (id),
    phase       text NOT NULL,
    replay      integer NOT NULL,
    output      jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, phase)
);

-- Message dedup: the effect of a message and its id commit together. The
-- follow-up records what the message led to, so that a duplicate can lead the
-- run forward again without redoing the effect.
CREATE TABLE processed_messages (
    message_id    text PRIMARY KEY,
    run_id        uuid NOT NULL,
    phase         text NOT NULL,
    follow_up     jsonb NOT NULL,
    processed_at  timestamptz NOT NULL DEFAULT now()
);

-- Index of dead letters, so they can be listed and filtered without draining
-- the queues. Poison messages that never became a run have no run_id.
CREATE TABLE dead_letters (
    id               uuid PRIMARY KEY,
    run_id           uuid REFERENCES runs (id),
    tenant           text,
    phase            text NOT NULL,
    queue            text NOT NULL,
    message_id       text,
    error_class      text NOT NULL,
    error            text NOT NULL,
    fingerprint      text NOT NULL,
    attempts         integer NOT NULL,
    replay           integer NOT NULL DEFAULT 0,
    first_failed_at  timestamptz NOT NULL,
    last_failed_at   timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'replayed', 'discarded')),
    body             bytea,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_pending ON dead_letters (tenant, phase, created_at) WHERE status = 'pending';
CREATE INDEX dead_letters_run ON dead_letters (run_id);
