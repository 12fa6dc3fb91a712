-- The intake inbox (docs/DESIGN.md "Fair admission"): while requests
-- arrive on `<ns>.requests` faster than runs can be made of them (a full
-- intake batch), intake stores each checked request here and acks it, one
-- cheap statement per batch, so that the one FIFO request queue never
-- holds one tenant's requests behind another's flood. The scheduler turns
-- them into runs a few per tenant at a time, each row deleted in the
-- transaction that creates its run: none is lost, none becomes two runs.
CREATE TABLE intake_inbox (
    id bigserial PRIMARY KEY,
    tenant text NOT NULL,
    priority smallint NOT NULL CHECK (priority BETWEEN 0 AND 9),
    received_at timestamptz NOT NULL DEFAULT now(),
    -- The request as intake checked it (a store::requests::NewRun).
    request jsonb NOT NULL
);

-- Each tenant's spooled requests in the order they become runs.
CREATE INDEX intake_inbox_order ON intake_inbox (tenant, priority DESC, id);
