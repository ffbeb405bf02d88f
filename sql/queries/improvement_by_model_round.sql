-- Observer alignment before vs after revision per agent model and round, and the realignment samples kept (one
-- per neighbour feedback) with the interactions they came from.
WITH scores AS (
    SELECT agent_model, round,
           count(*) AS interactions,
           count(alignment_gain) AS scored,
           round(avg(alignment_before), 3) AS mean_before,
           round(avg(alignment_after), 3) AS mean_after,
           round(avg(alignment_gain), 3) AS mean_gain,
           round(avg(CASE WHEN improved THEN 1.0 ELSE 0.0 END) FILTER (WHERE improved IS NOT NULL), 3) AS improved_share
    FROM scored_revisions
    GROUP BY agent_model, round
),
kept AS (
    SELECT agent_model, round, count(*) AS realignment_samples,
           count(DISTINCT interaction_id) AS realignment_interactions
    FROM alignment_samples
    WHERE sample_type = 'realignment'
    GROUP BY agent_model, round
)
SELECT s.*, coalesce(k.realignment_samples, 0) AS realignment_samples,
       coalesce(k.realignment_interactions, 0) AS realignment_interactions
FROM scores s
LEFT JOIN kept k USING (agent_model, round)
ORDER BY agent_model, round
