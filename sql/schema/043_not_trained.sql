-- Why a checkpoint was not trained (its data gave it nothing to learn from: no samples of its type, no preference
-- pair, no reward model). NULL: it trained. A row with a note is its starting model, unchanged (steps = 0), so
-- the curriculum can chain through it, and the benchmarks say "not run" for it instead of measuring its parent.
ALTER TABLE checkpoints ADD COLUMN note VARCHAR;
