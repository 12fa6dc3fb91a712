-- Workloads and their LLM request telemetry, analysed by the agents.

CREATE TABLE workloads (
    tenant      text NOT NULL,
    id          text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, id)
);

CREATE TABLE llm_requests (
    id              bigserial PRIMARY KEY,
    tenant          text NOT NULL,
    workload_id     text NOT NULL,
    ts              timestamptz NOT NULL,
    model           text NOT NULL,
    input_tokens    integer NOT NULL CHECK (input_tokens >= 0),
    output_tokens   integer NOT NULL CHECK (output_tokens >= 0),
    latency_ms      double precision,
    ttft_ms         double precision,
    status          text NOT NULL DEFAULT 'ok',
    cost_usd        double precision,
    FOREIGN KEY (tenant, workload_id) REFERENCES workloads (tenant, id)
);
CREATE INDEX llm_requests_workload_ts ON llm_requests (tenant, workload_id, ts);

-- The supply catalog: model prices and GPU offers, loaded from catalog/*.json.
CREATE TABLE catalog_models (
    id                      text PRIMARY KEY,
    provider                text NOT NULL,
    input_per_mtok          double precision NOT NULL,
    output_per_mtok         double precision NOT NULL,
    cached_input_discount   double precision NOT NULL,
    batch_discount          double precision NOT NULL,
    context_window          integer NOT NULL,
    quality_tier            integer NOT NULL,
    typical_latency_ms      double precision NOT NULL,
    output_tokens_per_s     double precision NOT NULL,
    source                  text NOT NULL,
    as_of                   date NOT NULL,
    catalog_version         text NOT NULL
);

CREATE TABLE catalog_gpus (
    id                    text PRIMARY KEY,
    gpu                   text NOT NULL,
    hourly_usd            double precision NOT NULL,
    memory_gb             integer NOT NULL,
    tokens_per_s          jsonb NOT NULL,
    source                text NOT NULL,
    as_of                 date NOT NULL,
    catalog_version       text NOT NULL
);
