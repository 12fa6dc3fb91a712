-- The intake of a batch of requests with distinct idempotency keys, in one
-- statement without an explicit transaction (see requests.rs). Each run
-- whose thread is new, or the tenant's, and whose key is new is inserted
-- with its user message and first history row; a new thread only together
-- with its run (the run's foreign key is checked at the end of the
-- statement). Keys go in in (tenant, key) order, so two batches carrying
-- copies of the same requests cannot deadlock. The RETURNING list of the
-- run's columns is filled in at start-up.
--
-- Fair admission (migration 0015): of each tenant's requests, as many as
-- netra_fair_admit allows (budget $13, default weight $14 and cap $15) are
-- admitted, highest priority first; the others wait (`tenant over its
-- share`) and are not published. The function locks each tenant's
-- admission in name order, so concurrent intakes neither overshoot a share
-- nor deadlock. A request over its tenant's rate ($16, decided by the
-- caller) waits `over its rate` and takes no part in the share.
WITH requests AS (
  SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
      $6::text[], $7::jsonb[], $8::bool[], $9::text[], $12::int2[], $16::bool[]) WITH ORDINALITY
    AS t(id, tenant, thread_id, correlation_id, request_message_id, reply_to, request, new_thread,
         message, priority, over_rate, idx)),
allowed AS (
  SELECT r.* FROM requests r
  WHERE new_thread
     OR EXISTS (SELECT 1 FROM threads t WHERE t.id = r.thread_id AND t.tenant = r.tenant)),
quota AS (
  SELECT tenant, netra_fair_admit(tenant, n, false, $13, $14, $15) AS admit
  FROM (SELECT tenant, (count(*) FILTER (WHERE NOT over_rate))::int AS n FROM allowed
        GROUP BY tenant ORDER BY tenant) g),
ranked AS (
  SELECT a.*, CASE
      WHEN a.over_rate THEN 'over its rate'
      WHEN row_number() OVER (PARTITION BY a.tenant, a.over_rate ORDER BY a.priority DESC, a.idx)
           <= q.admit THEN NULL
      ELSE 'tenant over its share' END AS wait_reason
  FROM allowed a JOIN quota q ON q.tenant = a.tenant),
created AS (
  INSERT INTO runs (id, tenant, thread_id, correlation_id, request_message_id, reply_to,
      request, status, phase, attempt, replay, priority, wait_reason)
  SELECT id, tenant, thread_id, correlation_id, request_message_id, reply_to, request,
    'queued', $10, 1, 0, priority, wait_reason
  FROM ranked ORDER BY tenant, request_message_id, idx
  ON CONFLICT (tenant, request_message_id) WHERE request_message_id IS NOT NULL DO NOTHING
  RETURNING {returning}),
created_requests AS (
  SELECT c.*, r.idx, r.new_thread, r.message FROM created c JOIN requests r ON r.id = c.id),
new_threads AS (
  INSERT INTO threads (id, tenant)
  SELECT thread_id, tenant FROM created_requests WHERE new_thread),
user_messages AS (
  INSERT INTO messages (thread_id, run_id, role, content)
  SELECT thread_id, id, 'user', message FROM created_requests ORDER BY idx),
history AS (
  INSERT INTO run_history (run_id, actor, to_status, phase, attempt, replay, detail)
  SELECT id, $11, 'queued', $10, 1, 0,
    CASE WHEN wait_reason IS NULL THEN NULL ELSE jsonb_build_object('waiting', wait_reason) END
  FROM created_requests ORDER BY idx)
SELECT {returning}, idx FROM created_requests ORDER BY idx
