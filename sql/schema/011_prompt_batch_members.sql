-- A batch owns every prompt of its file, including texts first stored by another batch (prompts keeps one row
-- per distinct text; prompts.batch stays "the batch that brought it first"). Replaced on each ingest of the batch.
CREATE TABLE IF NOT EXISTS prompt_batch_members (
    batch        VARCHAR NOT NULL,
    prompt_id    VARCHAR NOT NULL,             -- prompts.prompt_id
    line         INTEGER NOT NULL,             -- first line of that text in this batch's file (file order)
    PRIMARY KEY (batch, prompt_id)
);

-- Batches ingested before this table existed own at least the prompts they brought first.
INSERT INTO prompt_batch_members (batch, prompt_id, line)
SELECT batch, prompt_id, line FROM prompts
ON CONFLICT DO NOTHING;

-- Quarantine rows are kept for good: keyed by the file content they came from, so re-ingesting the same file
-- adds nothing and ingesting a changed file adds its rejections next to the old ones. The batch's current
-- rejections are those whose file_sha256 is prompt_batches.file_sha256.
CREATE TABLE rejected_prompts_kept (
    batch        VARCHAR NOT NULL,
    source_file  VARCHAR NOT NULL,
    file_sha256  VARCHAR NOT NULL,             -- sha256 of the file bytes ('' for rows older than this column)
    line         INTEGER NOT NULL,
    reason       VARCHAR NOT NULL,
    raw_excerpt  VARCHAR,
    rejected_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (batch, file_sha256, line)
);

INSERT INTO rejected_prompts_kept (batch, source_file, file_sha256, line, reason, raw_excerpt, rejected_at)
SELECT r.batch, r.source_file, coalesce(b.file_sha256, ''), r.line, r.reason, r.raw_excerpt, r.rejected_at
FROM rejected_prompts r LEFT JOIN prompt_batches b USING (batch);

DROP TABLE rejected_prompts;
ALTER TABLE rejected_prompts_kept RENAME TO rejected_prompts;
