-- The call ledger: every language-model call a phase made, and every time a
-- retry, redelivery or replay reused a recorded answer instead of calling
-- again (docs/DESIGN.md "The call ledger").

CREATE TABLE model_calls (
    id              bigserial PRIMARY KEY,
    tenant          text NOT NULL,
    run_id          uuid NOT NULL REFERENCES runs (id),
    phase           text NOT NULL,
    attempt         integer NOT NULL,
    replay          integer NOT NULL,
    -- What the call was for within the phase (`triage`, `triage_retry`, …).
    purpose         text NOT NULL,
    provider        text NOT NULL,
    model           text NOT NULL,
    prompt_version  text NOT NULL,
    -- SHA-256 of the rendered request (with the prompt version): the key a
    -- later attempt of the same phase of the same run looks its answer up by.
    request_hash    text NOT NULL,
    request         jsonb NOT NULL,
    -- The answer (`content`, `finish_reason`, the model that answered);
    -- null when the call failed.
    response        jsonb,
    error           text,
    -- The call whose answer this row reused (a ledger hit: nothing was paid).
    reused_from     bigint REFERENCES model_calls (id),
    input_tokens    integer NOT NULL DEFAULT 0,
    output_tokens   integer NOT NULL DEFAULT 0,
    cached_tokens   integer NOT NULL DEFAULT 0,
    latency_ms      double precision NOT NULL DEFAULT 0,
    -- From the catalog's prices; null with cost_basis `self-hosted` when the
    -- model has none.
    cost_usd        double precision,
    cost_basis      text NOT NULL,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_calls_lookup ON model_calls (run_id, phase, purpose, request_hash)
    WHERE response IS NOT NULL AND reused_from IS NULL;
CREATE INDEX model_calls_run ON model_calls (run_id, id);
CREATE INDEX model_calls_tenant_at ON model_calls (tenant, at);
