-- What can be trained is one list in the library (training/stages.py); its rows are copied here whenever a
-- checkpoint is recorded, so SQL can join a checkpoint to its role, parent and description. The enumerated
-- CHECK on checkpoints.kind goes: a new stage or baseline is then a change in that one list, and the library
-- refuses unknown kinds before writing (training/lineage.py).
CREATE TABLE IF NOT EXISTS checkpoint_kinds (
    kind        VARCHAR PRIMARY KEY,
    role        VARCHAR NOT NULL,            -- stage | baseline
    objective   VARCHAR NOT NULL,
    parent      VARCHAR,                     -- kind it starts from; NULL: the base model
    description VARCHAR NOT NULL
);
CREATE TABLE checkpoints_next (
    name              VARCHAR PRIMARY KEY,
    kind              VARCHAR NOT NULL,          -- a kind of checkpoint_kinds
    objective         VARCHAR NOT NULL,
    path              VARCHAR NOT NULL,          -- model directory (loads with from_pretrained)
    base_model        VARCHAR NOT NULL,          -- what training started from: a model id/path or a parent's path
    parent_checkpoint VARCHAR,                   -- name of the checkpoint it started from; NULL: the base model
    samples_batches   VARCHAR[] NOT NULL,        -- alignment_samples batches in its training data
    steps             INTEGER NOT NULL,
    mlflow_run_id     VARCHAR,
    registered_model  VARCHAR,                   -- name/version in the MLflow model registry
    metrics           JSON,
    created_at        TIMESTAMP NOT NULL
);
INSERT INTO checkpoints_next SELECT * FROM checkpoints;
DROP TABLE checkpoints;
ALTER TABLE checkpoints_next RENAME TO checkpoints;
