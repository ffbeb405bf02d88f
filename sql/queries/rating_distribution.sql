-- Rating histogram (rounded to 1..7) per sample type and what the rating rates, with the share of each bucket.
-- Counted per rating_source first, then neighbour:<id>:<what> is folded into neighbour:<what> (rates_draft for
-- self-critique; imitation and realignment are rated by the observer, draft before and revision after).
WITH counted AS (
    SELECT sample_type, rating_source, round(rating)::INTEGER AS rating_bucket, count(*) AS n
    FROM alignment_samples
    WHERE rating IS NOT NULL
    GROUP BY sample_type, rating_source, rating_bucket
),
named AS (
    SELECT sample_type, regexp_replace(rating_source, ':[0-9]+:', ':') AS rated_by, rating_bucket, sum(n) AS samples
    FROM counted
    GROUP BY sample_type, rated_by, rating_bucket
)
SELECT sample_type, rated_by, rating_bucket, samples,
       round(100.0 * samples / sum(samples) OVER (PARTITION BY sample_type, rated_by), 2) AS pct
FROM named
ORDER BY sample_type, rated_by, rating_bucket
