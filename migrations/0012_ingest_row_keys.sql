-- Idempotent ingest (README "Telemetry, catalog and the analysis"; docs/DESIGN.md
-- "Ingest"): every row `netra ingest` writes carries a key, the SHA-256 of
-- the tenant, the workload, the row's content as read from the file
-- (timestamp, model, tokens, latency, time to first token, status, cost) and
-- its occurrence among identical rows of the same timestamp, so ingesting
-- the same rows again inserts nothing (`ON CONFLICT DO NOTHING` on this
-- index) while two identical requests of one file are both kept.
--
-- Rows written before this migration, and generated sample rows, have no
-- key (NULL): the index never matches them, so they are not deduplicated.
ALTER TABLE llm_requests ADD COLUMN row_key bytea;
CREATE UNIQUE INDEX llm_requests_row_key ON llm_requests (tenant, workload_id, row_key);
