-- Hardening (issue: chaos run and security probe).

-- Keys the workers share without configuration, created once at random by
-- the first process that needs one (the envelope authentication key).
CREATE TABLE shared_keys (
    name        text PRIMARY KEY,
    key         bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Set once the follow-ups of a processed message were confirmed by the
-- broker: a duplicate of that message then re-publishes nothing, so one
-- duplicate no longer cascades through every later phase and the reply.
ALTER TABLE processed_messages ADD COLUMN dispatched boolean NOT NULL DEFAULT false;

-- A deleted tenant keeps its row as a tombstone (no token, no broker user),
-- so its name can never be created again and inherit its runs.
ALTER TABLE tenants ADD COLUMN deleted_at timestamptz;
ALTER TABLE tenants ALTER COLUMN token_hash DROP NOT NULL;
