-- Ratings are sampled and parsed (rating_method 'parsed'); where the model gives log-probabilities, the
-- probability mass of the seven ratings right after "Rating:" and, only when that mass is at least one half,
-- their renormalised expected value are kept beside the sampled rating (sandbox/ratings.py).
ALTER TABLE sandbox_feedback ADD COLUMN IF NOT EXISTS expected_rating DOUBLE;
ALTER TABLE sandbox_feedback ADD COLUMN IF NOT EXISTS rating_mass DOUBLE;
ALTER TABLE observer_ratings ADD COLUMN IF NOT EXISTS expected_rating DOUBLE;
ALTER TABLE observer_ratings ADD COLUMN IF NOT EXISTS rating_mass DOUBLE;
