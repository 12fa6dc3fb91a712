-- A tenant can be exempted from the configured default cap on runs in
-- flight (docs/DESIGN.md "Fair admission"): `tenants.max_in_flight` 0
-- means "no cap", whatever NETRA_FAIR_MAX_IN_FLIGHT says; NULL still means
-- "the configured default", and 1 or more the tenant's own cap. Before
-- this, NULL was the only way to have no cap, so a deployment that set a
-- default cap could exempt no tenant.

-- 0 joins the allowed values (the constraint 0015 named implicitly).
ALTER TABLE tenants DROP CONSTRAINT tenants_max_in_flight_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_max_in_flight_check CHECK (max_in_flight >= 0);

-- As in 0015, except that a cap of 0 (the tenant's "no cap") bounds
-- nothing. The signature is unchanged: the intake statement and the
-- scheduler's release call it as before.
--
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
CREATE OR REPLACE FUNCTION netra_fair_admit(p_tenant text, p_n integer, p_releasing boolean,
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
    -- The tenant's own cap wins over the configured one (`p_cap`, NULL when
    -- none is configured), its 0 included.
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
    -- A cap of 0 is "no cap": only the share bounds the tenant.
    IF cap IS NOT NULL AND cap > 0 THEN
        room := least(room, cap - mine);
    END IF;
    RETURN greatest(0, least(p_n, room));
END
$$;
