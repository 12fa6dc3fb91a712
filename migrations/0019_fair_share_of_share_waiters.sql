-- Fair admission with request rates (0018): the share of the runs in
-- flight is divided among the tenants whose runs wait for a share. A
-- tenant whose only waiting runs wait `over its rate` cannot use a share
-- until its rate lets them go on, so it no longer counts among the
-- waiting tenants (before, its weight shrank the others' shares while
-- nothing of its could run). And the tenant's own runs in flight are only
-- counted where they bound it (its share, or its cap): a tenant alone and
-- uncapped, every request of a single-tenant deployment, costs one count
-- of the runs in flight instead of two. Otherwise as in 0016: the same
-- signature, a cap of 0 being no cap.
--
-- How many of `n` more runs of `tenant` may be admitted now: while other
-- tenants wait for a share, its weighted share of `budget` runs in flight
-- less those it has; while none waits, what is free of `budget`; never
-- beyond its cap. On intake (`releasing` false) a tenant with waiting runs
-- (for any reason) admits none: new requests queue behind them. It first
-- takes the tenant's admission lock (until the end of the caller's
-- transaction), and is VOLATILE so that each of its reads sees what was
-- committed before it got the lock. Callers take the locks of several
-- tenants in name order.
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
    -- The weights of the other tenants with waiting runs (a loose index
    -- scan of runs_waiting: one probe per tenant).
    WITH RECURSIVE waiting(tenant) AS (
        (SELECT r.tenant FROM runs r WHERE r.wait_reason IS NOT NULL ORDER BY r.tenant LIMIT 1)
      UNION ALL
        SELECT (SELECT r.tenant FROM runs r WHERE r.wait_reason IS NOT NULL AND r.tenant > x.tenant
                ORDER BY r.tenant LIMIT 1)
        FROM waiting x WHERE x.tenant IS NOT NULL)
    -- Only runs waiting for a share count: a tenant whose runs wait for
    -- its request rate cannot use a share now, and is left out (0019).
    SELECT coalesce(sum(coalesce(t.weight, p_weight)), 0) INTO others
      FROM waiting x LEFT JOIN tenants t ON t.name = x.tenant
     WHERE x.tenant IS NOT NULL AND x.tenant <> p_tenant
       AND EXISTS (SELECT 1 FROM runs r WHERE r.tenant = x.tenant
                   AND r.wait_reason = 'tenant over its share' AND r.status = 'queued');
    -- The tenant's own runs in flight are counted only where they bound
    -- it: its share while others wait, or its cap (a cap of 0 is "no
    -- cap"). A tenant alone and uncapped, the common case, costs one count.
    IF others = 0 THEN
        SELECT count(*) INTO total FROM (SELECT 1 FROM runs r
            WHERE r.wait_reason IS NULL AND r.finished_at IS NULL
              AND r.status IN ('queued', 'running', 'retrying') LIMIT p_budget) f;
        room := p_budget - total;
    END IF;
    IF others > 0 OR (cap IS NOT NULL AND cap > 0) THEN
        SELECT count(*) INTO mine FROM runs r
         WHERE r.tenant = p_tenant AND r.wait_reason IS NULL AND r.finished_at IS NULL
           AND r.status IN ('queued', 'running', 'retrying');
        IF others > 0 THEN
            room := ceil(p_budget::numeric * w / (w + others))::integer - mine;
        END IF;
        IF cap IS NOT NULL AND cap > 0 THEN
            room := least(room, cap - mine);
        END IF;
    END IF;
    RETURN greatest(0, least(p_n, room));
END
$$;
