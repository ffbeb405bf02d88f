-- One row per sandbox interaction with its neighbours' feedback in the order shown (lowest rating last).
CREATE OR REPLACE VIEW sandbox_transcripts AS
SELECT
    i.interaction_id, i.world_id, i.batch, i.round, i.agent_id, i.agent_label, i.agent_model, i.prompt_id,
    i.question, i.retrieved_memories, i.draft, i.neighbour_ids, i.mean_feedback_rating, i.revision,
    coalesce(f.feedback, []) AS feedback,
    i.llm_calls, i.prompt_tokens, i.completion_tokens, i.created_at
FROM sandbox_interactions i
LEFT JOIN (
    SELECT interaction_id,
           list(struct_pack(position := position, neighbour_id := neighbour_id, neighbour_model := neighbour_model,
                            rating := rating, rating_method := rating_method, reason := feedback,
                            null_reason := null_reason, expected_rating := expected_rating,
                            rating_mass := rating_mass) ORDER BY position) AS feedback
    FROM sandbox_feedback
    GROUP BY interaction_id
) f USING (interaction_id);
