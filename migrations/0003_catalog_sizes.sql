-- Supply catalog additions for the optimization agent: the model size class
-- that maps a self-hostable model to a GPU offer's tokens/s figure, and when
-- each row was last loaded from catalog/*.json (the load is an idempotent upsert).

ALTER TABLE catalog_models ADD COLUMN size_class text;
ALTER TABLE catalog_models ADD COLUMN loaded_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE catalog_gpus ADD COLUMN loaded_at timestamptz NOT NULL DEFAULT now();

-- Per-model aggregations of a workload's telemetry (cost breakdown, output caps).
CREATE INDEX llm_requests_workload_model ON llm_requests (tenant, workload_id, model);
