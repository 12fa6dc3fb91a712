-- netra's own language-model calls as telemetry (docs/DESIGN.md "The call
-- ledger"): the tools read `telemetry_requests`, which is every tenant's
-- `llm_requests` and, as requests of the workload `netra-llm`, the model
-- calls its runs made (`model_calls` rows that are not reuses: a ledger hit
-- called nothing). A view, so nothing is copied and the ledger stays the one
-- record of the calls.
--
-- A failed call is a request with status `error` that cost nothing (its row
-- has no price: cost_basis `failed`); a call to a model without a catalog
-- price keeps its null cost (the tools price it from the catalog or call it
-- unknown, as for any workload). The time to first token is not recorded.
--
-- `model_calls` has no data_version trigger: writes to it do not invalidate
-- the tools' memo, and results for `netra-llm` are never memoized (see
-- src/tools/mod.rs).

CREATE VIEW telemetry_requests AS
    SELECT tenant, workload_id, ts, model, input_tokens, output_tokens, latency_ms, ttft_ms,
           status, cost_usd
      FROM llm_requests
    UNION ALL
    SELECT tenant, 'netra-llm'::text, at, model, input_tokens, output_tokens, latency_ms,
           NULL::double precision,
           CASE WHEN error IS NULL THEN 'ok' ELSE 'error' END,
           CASE WHEN cost_basis = 'failed' THEN 0::double precision ELSE cost_usd END
      FROM model_calls
     WHERE reused_from IS NULL;
