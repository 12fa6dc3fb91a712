-- The starts of a batch of phase attempts of distinct runs, in one
-- statement (see starts.rs). It locks the runs in id order (as the effect
-- statement does, so the two cannot deadlock), marks `running` those that
-- wait for exactly the envelope's step (phase, attempt and replay
-- generation) and whose lease is free (a running run's lease expired, or
-- was released, or never taken), gives each the lease of its attempt
-- (worker $5, the attempt's fresh token, for $6 seconds), writes their
-- history rows, and reads each started run's inputs. A step whose lease is
-- live is not started (the caller tells that answer from the others). The
-- RETURNING list of the run's columns is filled in at start-up.
WITH envelopes AS (
  SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int4[], $4::int4[], $7::uuid[]) WITH ORDINALITY
    AS t(run_id, phase, attempt, replay, token, idx)),
locked_runs AS (
  SELECT r.id, r.status FROM runs r WHERE r.id IN (SELECT run_id FROM envelopes)
  ORDER BY r.id FOR UPDATE),
started AS (
  UPDATE runs SET status = 'running', updated_at = now(),
    lease_owner = $5, lease_token = e.token,
    lease_expires_at = now() + make_interval(secs => $6)
  FROM envelopes e, locked_runs l
  WHERE runs.id = e.run_id AND l.id = e.run_id AND runs.phase = e.phase
    AND runs.attempt = e.attempt AND runs.replay = e.replay
    AND runs.status IN ('queued', 'running', 'retrying')
    -- a run waiting to be admitted has no step to start (migration 0015)
    AND runs.wait_reason IS NULL
    -- a live lease of another attempt: that attempt is running this step
    AND (runs.status <> 'running' OR runs.lease_token IS NULL
         OR runs.lease_expires_at IS NULL OR runs.lease_expires_at <= now())
  RETURNING {returning}, e.idx, l.status AS prev_status),
history AS (
  INSERT INTO run_history (run_id, actor, from_status, to_status, phase, attempt, replay)
  SELECT id, $5, prev_status, 'running', phase, attempt, replay FROM started ORDER BY idx)
SELECT s.*,
  -- the upstream phases' outputs, by phase
  (SELECT coalesce(json_object_agg(o.phase, o.output), '{}'::json)
     FROM phase_outputs o WHERE o.run_id = s.id AND o.phase <> s.phase) AS outputs,
  -- the thread's last 20 messages of other runs, oldest first
  (SELECT coalesce(jsonb_agg(jsonb_build_object('role', m.role, 'content', m.content) ORDER BY m.id), '[]'::jsonb)
     FROM (SELECT id, role, content FROM messages WHERE thread_id = s.thread_id
           AND (run_id IS NULL OR run_id <> s.id) ORDER BY id DESC LIMIT 20) m) AS thread,
  -- the patch of the replay that queued this step, if any
  (SELECT h.detail->'patch' FROM run_history h WHERE s.replay > 0 AND h.run_id = s.id
     AND h.phase = s.phase AND h.replay = s.replay AND h.to_status = 'queued'
     AND h.detail ? 'patch' ORDER BY h.id DESC LIMIT 1) AS patch,
  -- the data version the tools' memo keys on
  (SELECT version FROM data_version) AS data_version
FROM started s ORDER BY idx
