-- Fair admission between tenants (docs/DESIGN.md "Fair admission"): a run
-- enters the phase queues only while its tenant is under its share of the
-- runs in flight; the others wait in Postgres, `queued` with a
-- `wait_reason`, until the scheduler releases them (highest priority
-- first, oldest first within a priority).

-- A tenant's weight and cap; NULL: the configured default
-- (NETRA_FAIR_WEIGHT, NETRA_FAIR_MAX_IN_FLIGHT).
ALTER TABLE tenants
    ADD COLUMN weight integer CHECK (weight BETWEEN 1 AND 1000),
    ADD COLUMN max_in_flight integer CHECK (max_in_flight >= 1);

-- A request's priority (0-9, the AMQP `priority` property or the HTTP
-- field), and why a run waits to be admitted (NULL: admitted).
ALTER TABLE runs
    ADD COLUMN priority smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    ADD COLUMN wait_reason text CHECK (wait_reason IN ('tenant over its share', 'over its rate'));

-- The waiting runs, in the order they are released.
CREATE INDEX runs_waiting ON runs (tenant, priority DESC, created_at, id)
    WHERE wait_reason IS NOT NULL;
-- The runs in flight (admitted, not finished), by tenant. No status in the
-- predicate: the status changes of the phases stay HOT updates (0004); a
-- run's finished_at is set once, at its final status.
CREATE INDEX runs_in_flight ON runs (tenant)
    WHERE wait_reason IS NULL AND finished_at IS NULL;

-- How many of `n` more runs of `tenant` may be admitted now: while other
-- tenants wait, its weighted share of `budget` runs in flight less those it
-- has; while none waits, what is free of `budget`; never beyond its cap.
-- On intake (`releasing` false) a tenant with waiting runs admits none:
-- new requests queue behind them, and the scheduler releases in priority
-- order. It first takes the tenant's admission lock (until the end of the
-- caller's transaction), and is VOLATILE so that each of its reads sees
-- what was committed before it got the lock: concurrent intakes and
-- releases of one tenant admit one after the other, never beyond the share
-- between them. Callers take the locks of several tenants in name order.
CREATE FUNCTION netra_fair_admit(p_tenant text, p_n integer, p_releasing boolean,
        p_budget integer, p_weight integer, p_cap integer)
    RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    w integer;
    cap integer;
    mine integer;
    others bigint;
    total integer;
    room integer;
BEGIN
    IF p_n <= 0 THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('netra.fair'), hashtext(p_tenant));
    SELECT coalesce(max(t.weight), p_weight), coalesce(max(t.max_in_flight), p_cap)
      INTO w, cap FROM tenants t WHERE t.name = p_tenant;
    IF NOT p_releasing AND EXISTS (SELECT 1 FROM runs r
            WHERE r.tenant = p_tenant AND r.wait_reason IS NOT NULL AND r.status = 'queued') THEN
        RETURN 0;
    END IF;
    SELECT count(*) INTO mine FROM runs r
     WHERE r.tenant = p_tenant AND r.wait_reason IS NULL AND r.finished_at IS NULL
       AND r.status IN ('queued', 'running', 'retrying');
    -- The weights of the other tenants with waiting runs (a loose index
    -- scan of runs_waiting: one probe per tenant).
    WITH RECURSIVE waiting(tenant) AS (
        (SELECT r.tenant FROM runs r WHERE r.wait_reason IS NOT NULL ORDER BY r.tenant LIMIT 1)
      UNION ALL
        SELECT (SELECT r.tenant FROM runs r WHERE r.wait_reason IS NOT NULL AND r.tenant > x.tenant
                ORDER BY r.tenant LIMIT 1)
        FROM waiting x WHERE x.tenant IS NOT NULL)
    SELECT coalesce(sum(coalesce(t.weight, p_weight)), 0) INTO others
      FROM waiting x LEFT JOIN tenants t ON t.name = x.tenant
     WHERE x.tenant IS NOT NULL AND x.tenant <> p_tenant
       AND EXISTS (SELECT 1 FROM runs r WHERE r.tenant = x.tenant
                   AND r.wait_reason IS NOT NULL AND r.status = 'queued');
    IF others = 0 THEN
        SELECT count(*) INTO total FROM (SELECT 1 FROM runs r
            WHERE r.wait_reason IS NULL AND r.finished_at IS NULL
              AND r.status IN ('queued', 'running', 'retrying') LIMIT p_budget) f;
        room := p_budget - total;
    ELSE
        room := ceil(p_budget::numeric * w / (w + others))::integer - mine;
    END IF;
    IF cap IS NOT NULL THEN
        room := least(room, cap - mine);
    END IF;
    RETURN greatest(0, least(p_n, room));
END
$$;
