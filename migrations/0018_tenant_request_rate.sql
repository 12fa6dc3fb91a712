-- A tenant's request rate (docs/DESIGN.md "Fair admission"): at most this
-- many new runs per minute, on every way in (AMQP requests and
-- `POST /v1/runs`). A request over it is not refused: its run is created
-- `queued` with `wait_reason = 'over its rate'`, and the admission loop
-- lets it go on as the tenant's window has room. NULL: the configured
-- default (NETRA_FAIR_REQUESTS_PER_MIN, default 0); 0: no limit.
ALTER TABLE tenants
    ADD COLUMN requests_per_min integer CHECK (requests_per_min >= 0);

-- The runs waiting for their tenant's rate, in the order they go on.
CREATE INDEX runs_over_rate ON runs (tenant, priority DESC, created_at, id)
    WHERE wait_reason = 'over its rate';
