-- The ingest history (docs/DESIGN.md "The console", Workloads): one row per
-- `netra ingest` that read its file to the end, written with its rows (in
-- the ingest's transaction) when it committed, and on its own when it was
-- aborted by too many bad rows (nothing inserted). An ingest that failed as
-- a whole (bad header, unknown model, empty file) inserted nothing and
-- leaves no row. No foreign key to `workloads`: an aborted ingest of a new
-- workload leaves no workload behind, but its row stays.
CREATE TABLE ingests (
    id              bigserial PRIMARY KEY,
    tenant          text NOT NULL,
    workload_id     text NOT NULL,
    -- `azure`, `csv` or `jsonl`.
    format          text NOT NULL,
    -- Data rows read from the file.
    rows_read       bigint NOT NULL,
    rows_inserted   bigint NOT NULL,
    -- Good rows the workload already had (same row key, migration 0012).
    rows_duplicate  bigint NOT NULL,
    -- Bad rows (rejected, by line number in the command's output).
    errors          bigint NOT NULL,
    -- More bad rows than --max-errors: nothing was kept.
    aborted         boolean NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ingests_workload ON ingests (tenant, workload_id, id);
