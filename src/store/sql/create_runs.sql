-- The intake of a batch of requests with distinct idempotency keys, in one
-- statement without an explicit transaction (see requests.rs). Each run
-- whose thread is new, or the tenant's, and whose key is new is inserted
-- with its user message and first history row; a new thread only together
-- with its run (the run's foreign key is checked at the end of the
-- statement). Keys go in in (tenant, key) order, so two batches carrying
-- copies of the same requests cannot deadlock. The RETURNING list of the
-- run's columns is filled in at start-up.
WITH requests AS (
  SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
      $6::text[], $7::jsonb[], $8::bool[], $9::text[]) WITH ORDINALITY
    AS t(id, tenant, thread_id, correlation_id, request_message_id, reply_to, request, new_thread,
         message, idx)),
allowed AS (
  SELECT r.* FROM requests r
  WHERE new_thread
     OR EXISTS (SELECT 1 FROM threads t WHERE t.id = r.thread_id AND t.tenant = r.tenant)),
created AS (
  INSERT INTO runs (id, tenant, thread_id, correlation_id, request_message_id, reply_to,
      request, status, phase, attempt, replay)
  SELECT id, tenant, thread_id, correlation_id, request_message_id, reply_to, request,
    'queued', $10, 1, 0
  FROM allowed ORDER BY tenant, request_message_id, idx
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
  INSERT INTO run_history (run_id, actor, to_status, phase, attempt, replay)
  SELECT id, $11, 'queued', $10, 1, 0 FROM created_requests ORDER BY idx)
SELECT {returning}, idx FROM created_requests ORDER BY idx
