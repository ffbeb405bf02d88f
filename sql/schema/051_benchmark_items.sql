-- Benchmarks with their uncertainty: every cell gets its 95% interval, every checkpoint its paired difference
-- from the base model on the same items, and every item its own row (audits, paired tests, re-scoring).
-- dataset_source: real = a shipped real test split (assets/benchmarks/); proxy = a stand-in that is not the
-- benchmark it is named after (mic_proxy), kept out of every average; fixture = rows of the former hand-written
-- stand-ins, which no code writes any more.
CREATE TABLE benchmark_results_next (
    checkpoint      VARCHAR NOT NULL,
    kind            VARCHAR NOT NULL CHECK (kind IN ('base', 'baseline', 'reference') OR kind LIKE 'stage%'),
    task            VARCHAR NOT NULL,
    metric          VARCHAR NOT NULL,          -- acc, acc_norm; score, score_expected, win_rate, unscored, ...
    value           DOUBLE,
    stderr          DOUBLE,
    n               INTEGER NOT NULL,          -- items behind the value
    ci_low          DOUBLE,                    -- 95% interval: Wilson (accuracies, win rate) or bootstrap
    ci_high         DOUBLE,
    ci_method       VARCHAR,                   -- wilson | bootstrap
    dataset_source  VARCHAR NOT NULL CHECK (dataset_source IN ('real', 'proxy', 'fixture')),
    model_path      VARCHAR,
    judge_model     VARCHAR,
    self_judged     BOOLEAN NOT NULL DEFAULT FALSE,  -- the judge is the evaluated model or its base model
    evaluated_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (checkpoint, task, metric)
);
INSERT INTO benchmark_results_next
SELECT checkpoint, kind, task, metric, value, stderr, n, NULL, NULL, NULL, dataset_source, model_path, judge_model,
       FALSE, evaluated_at
FROM benchmark_results;
DROP TABLE benchmark_results;
ALTER TABLE benchmark_results_next RENAME TO benchmark_results;

-- Judgements now name their item by file and row; rows judged on the former stand-ins are not carried over.
DROP TABLE benchmark_judgements;
CREATE TABLE benchmark_judgements (
    checkpoint      VARCHAR NOT NULL,
    task            VARCHAR NOT NULL,          -- hh | hh_a
    file            VARCHAR NOT NULL,          -- the shipped file of the item
    item_id         INTEGER NOT NULL,          -- 0-based row index in that file
    request         VARCHAR NOT NULL,
    answer          VARCHAR NOT NULL,
    score           DOUBLE,                    -- the integer parsed from the judge's reply (the paper's protocol)
    score_expected  DOUBLE,                    -- expectation over the judge's log-probs of 1..10 (extra column)
    method          VARCHAR,                   -- parsed | NULL (unscored)
    null_reason     VARCHAR,
    judge_calls     INTEGER NOT NULL,
    win             DOUBLE,                    -- against the base model's answer: 1, 0.5 (tie or split), 0
    judge_model     VARCHAR NOT NULL,
    self_judged     BOOLEAN NOT NULL DEFAULT FALSE,
    evaluated_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (checkpoint, task, file, item_id)
);

-- One row per checkpoint, task, metric and item: the prediction (the chosen choice's index, or the score) and
-- its value (1/0 for accuracies; the score, win or reward otherwise).
CREATE TABLE IF NOT EXISTS benchmark_items (
    checkpoint      VARCHAR NOT NULL,
    task            VARCHAR NOT NULL,
    metric          VARCHAR NOT NULL,
    file            VARCHAR NOT NULL,
    item_id         INTEGER NOT NULL,
    prediction      VARCHAR,
    value           DOUBLE,
    correct         BOOLEAN,                   -- accuracies only
    evaluated_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (checkpoint, task, metric, file, item_id)
);

-- Each checkpoint against the base model on the items both were scored on: checkpoint − base, its paired
-- bootstrap 95% interval, McNemar's exact p for accuracies (bootstrap share otherwise).
CREATE TABLE IF NOT EXISTS benchmark_comparisons (
    checkpoint      VARCHAR NOT NULL,
    task            VARCHAR NOT NULL,
    metric          VARCHAR NOT NULL,
    reference       VARCHAR NOT NULL,          -- base | sft
    n               INTEGER NOT NULL,          -- paired items
    diff            DOUBLE,
    ci_low          DOUBLE,
    ci_high         DOUBLE,
    p_value         DOUBLE,
    test            VARCHAR NOT NULL,          -- mcnemar | bootstrap
    excludes_zero   BOOLEAN NOT NULL,
    evaluated_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (checkpoint, task, metric, reference)
);
