-- Phase outputs and run results are written once and read back whole by
-- netra (never queried inside), so they are stored as `json` (validated
-- text) rather than `jsonb`: no binary tree is built on every write and
-- turned back into text on every read. Measured on netra's outputs (5 kB
-- on average): jsonb in + out 29 us per document, json 6 us; a run writes
-- about 40 kB of them and reads about 30 kB back.

ALTER TABLE phase_outputs ALTER COLUMN output TYPE json USING output::json;
ALTER TABLE runs ALTER COLUMN result TYPE json USING result::json;
ALTER TABLE phase_outputs ALTER COLUMN output SET COMPRESSION lz4;
ALTER TABLE runs ALTER COLUMN result SET COMPRESSION lz4;
