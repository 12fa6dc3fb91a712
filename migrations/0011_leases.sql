-- Leases on running attempts (docs/DESIGN.md "Rules the engine keeps",
-- Leases): the start of an attempt takes the run's lease (its worker, a
-- fresh token, an expiry), the worker renews it while the phase runs, and
-- the attempt's effect commits only while the run still holds its token.
-- A redelivery of a step whose lease is live is acked without running; a
-- running run whose lease expired (its worker died) has its step published
-- again by the sweeper, at the same attempt.
--
-- Not indexed: the columns change on every start, heartbeat and effect, and
-- an index would cost those updates their HOT path (migration 0004); the
-- sweeper reads them at most every few seconds.
ALTER TABLE runs
    ADD COLUMN lease_owner text,
    ADD COLUMN lease_token uuid,
    ADD COLUMN lease_expires_at timestamptz;
