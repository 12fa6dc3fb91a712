-- The effects of a batch of phase attempts, of distinct runs and messages,
-- in one statement (group commit; see effects.rs, apply_batch). Each
-- attempt ends as it would alone:
--   * its run is locked (runs in id order, so batches cannot deadlock);
--   * its dedup record is inserted; only a new one writes anything else;
--   * a cancelled run gets only a `discarded` attempt and an empty dedup
--     record; a live one its attempt, output, new state (its lease
--     released), history row and, when it finishes with a report, the
--     thread's agent message;
--   * a fenced attempt (it names the lease token it started with, and the
--     run no longer holds that token: the lease expired and the step went
--     to another attempt) gets only a `discarded` attempt, and no dedup
--     record, so the attempt that holds the lease now still commits; if
--     the message was processed already it is a duplicate, as ever.
-- Answers per attempt: its position, whether the run exists, whether the
-- message was new, whether the run was live, whether the attempt was
-- fenced, whether the message was processed before this statement.
WITH attempts AS (
  SELECT * FROM UNNEST(
      -- the message and its dedup record
      $1::text[], $2::uuid[], $3::text[], $4::jsonb[],
      -- the attempt
      $5::int4[], $6::int4[], $7::text[], $8::jsonb[], $9::text[]::json[], $10::text[],
      $11::text[], $12::text[], $13::timestamptz[],
      -- the run's new state
      $14::text[], $15::text[], $16::int4[], $17::int4[], $18::timestamptz[], $19::bool[],
      $20::text[], $21::bool[], $22::jsonb[], $23::text[],
      -- the lease token the attempt started with (none: not fenced)
      $24::uuid[])
    WITH ORDINALITY
    AS t(message_id, run_id, phase, follow_up,
         attempt, replay, outcome, input, output, error_class,
         error, worker_id, started_at,
         status, next_phase, next_attempt, next_replay, next_attempt_at, has_result,
         run_error, final, detail, report, lease_token, idx)),
locked_runs AS (
  SELECT r.id, r.status, r.thread_id, r.lease_token FROM runs r
  WHERE r.id IN (SELECT run_id FROM attempts)
  ORDER BY r.id FOR UPDATE),
checked AS (
  SELECT a.*, run.status AS from_status, run.thread_id,
    run.status <> 'cancelled' AND a.lease_token IS NOT NULL
      AND run.lease_token IS DISTINCT FROM a.lease_token AS fenced
  FROM attempts a JOIN locked_runs run ON run.id = a.run_id),
attempts_with_run AS (
  SELECT c.*, from_status <> 'cancelled' AND NOT fenced AS live FROM checked c),
dedup_records AS (
  INSERT INTO processed_messages (message_id, run_id, phase, follow_up)
  SELECT message_id, run_id, phase, CASE WHEN live THEN follow_up ELSE '[]'::jsonb END
  FROM attempts_with_run WHERE NOT fenced
  ON CONFLICT (message_id) DO NOTHING
  RETURNING message_id),
new_attempts AS (
  SELECT w.* FROM attempts_with_run w JOIN dedup_records USING (message_id)),
fenced_attempts AS (
  SELECT w.* FROM attempts_with_run w WHERE w.fenced
    AND NOT EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = w.message_id)),
attempt_rows AS (
  INSERT INTO phase_attempts (run_id, phase, attempt, replay, message_id, outcome, input,
    error_class, error, worker_id, started_at, finished_at)
  SELECT run_id, phase, attempt, replay, message_id,
    CASE WHEN live THEN outcome ELSE 'discarded' END, input,
    CASE WHEN live THEN error_class END, CASE WHEN live THEN error END,
    worker_id, started_at, now()
  FROM (SELECT * FROM new_attempts UNION ALL SELECT * FROM fenced_attempts) n),
outputs AS (
  INSERT INTO phase_outputs (run_id, phase, replay, output)
  SELECT run_id, phase, replay, output FROM new_attempts
  WHERE live AND output IS NOT NULL
  ON CONFLICT (run_id, phase) DO UPDATE
    SET replay = EXCLUDED.replay, output = EXCLUDED.output, created_at = now()),
run_updates AS (
  UPDATE runs SET status = n.status, phase = n.next_phase, attempt = n.next_attempt,
    replay = n.next_replay, next_attempt_at = n.next_attempt_at,
    -- a finishing run's result is its last phase's output, bound once
    result = CASE WHEN n.has_result THEN n.output ELSE runs.result END,
    error = n.run_error, updated_at = now(),
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
    finished_at = CASE WHEN n.final THEN now() ELSE NULL END
  FROM new_attempts n WHERE runs.id = n.run_id AND n.live),
history AS (
  INSERT INTO run_history (run_id, actor, from_status, to_status, phase, attempt, replay, error, detail)
  SELECT run_id, worker_id, from_status, status, next_phase, next_attempt, next_replay, run_error, detail
  FROM new_attempts WHERE live ORDER BY idx),
report_messages AS (
  INSERT INTO messages (thread_id, run_id, role, content)
  SELECT thread_id, run_id, 'agent', report FROM new_attempts
  WHERE live AND report IS NOT NULL ORDER BY idx)
SELECT a.idx, run.id IS NOT NULL, d.message_id IS NOT NULL,
  coalesce(run.status <> 'cancelled', false), coalesce(c.fenced, false),
  EXISTS (SELECT 1 FROM processed_messages p WHERE p.message_id = a.message_id)
FROM attempts a
LEFT JOIN locked_runs run ON run.id = a.run_id
LEFT JOIN checked c ON c.idx = a.idx
LEFT JOIN dedup_records d ON d.message_id = a.message_id
ORDER BY a.idx
