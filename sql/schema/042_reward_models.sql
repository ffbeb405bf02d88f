-- Reward models (the RLHF baseline's scorer): where each lives, what it learned from and how well it ranks
-- held-out pairs; the rlhf checkpoint and the benchmarks' extra judge read the path from here.
CREATE TABLE IF NOT EXISTS reward_models (
    name            VARCHAR PRIMARY KEY,
    path            VARCHAR NOT NULL,          -- AutoModelForSequenceClassification directory (num_labels = 1)
    base_model      VARCHAR NOT NULL,
    samples_batches VARCHAR[] NOT NULL,        -- alignment_samples batches its pairs came from
    steps           INTEGER NOT NULL,
    mlflow_run_id   VARCHAR,
    metrics         JSON,                      -- held-out accuracy, length-bias figures before/after balancing
    created_at      TIMESTAMP NOT NULL
);
