-- The simulated society. A world is one sandbox run over one prompt batch.
CREATE TABLE IF NOT EXISTS sandbox_worlds (
    world_id     VARCHAR PRIMARY KEY,
    batch        VARCHAR NOT NULL,
    config       JSON NOT NULL,                -- the SandboxConfig it ran with (no secrets: key names only)
    seed         INTEGER NOT NULL,
    created_at   TIMESTAMP NOT NULL
);

-- Agent memory: every question, answer, feedback and rating an agent has seen. Survives restarts.
CREATE TABLE IF NOT EXISTS agent_memories (
    memory_id    VARCHAR PRIMARY KEY,
    world_id     VARCHAR NOT NULL,
    agent_id     INTEGER NOT NULL,
    kind         VARCHAR NOT NULL,             -- prior | answer | feedback_given | feedback_received
    round        INTEGER,                      -- NULL for prior memories
    question     VARCHAR NOT NULL,
    answer       VARCHAR NOT NULL,
    feedback     VARCHAR,
    rating       DOUBLE,
    embedding    FLOAT[],                      -- embedding of `question` (retrieval key), stored with it
    created_at   TIMESTAMP NOT NULL
);

-- One Back-Scatter interaction: (world, round, agent) is unique, so a resumed run never duplicates.
CREATE TABLE IF NOT EXISTS sandbox_interactions (
    interaction_id       VARCHAR PRIMARY KEY,  -- stable hash of (world_id, round, agent_id)
    world_id             VARCHAR NOT NULL,
    batch                VARCHAR NOT NULL,
    round                INTEGER NOT NULL,
    agent_id             INTEGER NOT NULL,
    agent_label          VARCHAR NOT NULL,     -- good | bad (stance)
    agent_model          VARCHAR NOT NULL,
    prompt_id            VARCHAR NOT NULL,
    question             VARCHAR NOT NULL,
    retrieved_memories   JSON NOT NULL,        -- [{question, answer, similarity}]
    draft                VARCHAR NOT NULL,
    neighbour_ids        INTEGER[] NOT NULL,   -- in feedback order (lowest rating last)
    mean_feedback_rating DOUBLE,               -- over non-NULL neighbour ratings
    revision             VARCHAR NOT NULL,
    llm_calls            INTEGER NOT NULL,
    prompt_tokens        INTEGER NOT NULL,
    completion_tokens    INTEGER NOT NULL,
    created_at           TIMESTAMP NOT NULL,
    UNIQUE (world_id, round, agent_id)
);

-- Neighbour feedback on a draft, one row per neighbour, `position` = order shown to the agent.
CREATE TABLE IF NOT EXISTS sandbox_feedback (
    interaction_id   VARCHAR NOT NULL,
    position         INTEGER NOT NULL,
    neighbour_id     INTEGER NOT NULL,
    neighbour_model  VARCHAR NOT NULL,
    feedback         VARCHAR NOT NULL,         -- the reason text
    rating           DOUBLE,                   -- 1..7 expected value or parsed; NULL with null_reason
    rating_argmax    INTEGER,
    rating_method    VARCHAR,                  -- logprob | parsed | scale
    null_reason      VARCHAR,
    PRIMARY KEY (interaction_id, position)
);

-- Memoryless observers' ratings of the draft (before) and revision (after).
CREATE TABLE IF NOT EXISTS observer_ratings (
    interaction_id   VARCHAR NOT NULL,
    target           VARCHAR NOT NULL,         -- draft | revision
    dimension        VARCHAR NOT NULL,         -- alignment | engagement
    observer_model   VARCHAR NOT NULL,
    rating           DOUBLE,
    rating_argmax    INTEGER,
    rating_method    VARCHAR,
    reason           VARCHAR,
    null_reason      VARCHAR,
    PRIMARY KEY (interaction_id, target, dimension)
);

-- scored_revisions asset: one row per interaction, before/after observer scores side by side.
CREATE TABLE IF NOT EXISTS scored_revisions (
    interaction_id     VARCHAR PRIMARY KEY,
    batch              VARCHAR NOT NULL,
    world_id           VARCHAR NOT NULL,
    round              INTEGER NOT NULL,
    agent_id           INTEGER NOT NULL,
    agent_model        VARCHAR NOT NULL,
    alignment_before   DOUBLE,
    alignment_after    DOUBLE,
    engagement_before  DOUBLE,
    engagement_after   DOUBLE,
    alignment_gain     DOUBLE,                 -- after - before; NULL if either is NULL
    improved           BOOLEAN,
    scored_at          TIMESTAMP NOT NULL
);
