-- One counter that every write to the data the agents' tools read bumps:
-- telemetry (`llm_requests`, `workloads`) and the supply catalog. The engine
-- reads it when a phase starts, and tool results are memoized under it (see
-- src/memo.rs), so a memoized result is always what the query would return
-- at that version. Statement triggers keep it whoever writes (netra ingest,
-- the catalog load, psql), once per statement, not per row.

CREATE TABLE data_version (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    version  bigint NOT NULL
);
INSERT INTO data_version (id, version) VALUES (true, 1);

CREATE FUNCTION bump_data_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE data_version SET version = version + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER llm_requests_data_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON llm_requests
    FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
CREATE TRIGGER workloads_data_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON workloads
    FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
CREATE TRIGGER catalog_models_data_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON catalog_models
    FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
CREATE TRIGGER catalog_gpus_data_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON catalog_gpus
    FOR EACH STATEMENT EXECUTE FUNCTION bump_data_version();
