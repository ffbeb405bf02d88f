"""Data-quality checks of a batch's sandbox tables, as CheckOutcome values."""

from __future__ import annotations

from alignment_pipeline.checks import Check, CheckOutcome
from alignment_pipeline.sandbox.answers import is_clean
from alignment_pipeline.sandbox.config import SandboxConfig
from alignment_pipeline.sandbox.world import World
from alignment_pipeline.warehouse.db import Warehouse

_RATING_VIOLATIONS = """
SELECT '{table}' AS source, {key} AS key,
    CASE WHEN rating IS NULL THEN 'NULL rating without a null_reason'
         WHEN rating < 1 OR rating > 7 THEN 'rating outside 1..7'
         WHEN rating_argmax IS NULL OR rating_argmax NOT BETWEEN 1 AND 7 THEN 'rating without an argmax in 1..7'
         WHEN rating_method NOT IN ('logprob', 'parsed', 'scale') OR rating_method IS NULL THEN 'unknown rating_method'
         ELSE 'rating and null_reason both set' END AS problem
FROM {table} t JOIN sandbox_interactions i USING (interaction_id)
WHERE i.batch = ? AND (
    (rating IS NULL AND coalesce(trim(null_reason), '') = '')
    OR (rating IS NOT NULL AND (rating < 1 OR rating > 7 OR isnan(rating) OR rating_argmax IS NULL
        OR rating_argmax NOT BETWEEN 1 AND 7 OR rating_method IS NULL
        OR rating_method NOT IN ('logprob', 'parsed', 'scale') OR null_reason IS NOT NULL)))
"""


def check_ratings_valid(warehouse: Warehouse, batch: str) -> CheckOutcome:
    """Every neighbour and observer rating of the batch is in [1, 7] (with an argmax in 1..7 and a method),
    or NULL with a non-empty null_reason, never both."""
    counts = warehouse.query(
        "SELECT (SELECT count(*) FROM sandbox_feedback f JOIN sandbox_interactions i USING (interaction_id) "
        "        WHERE i.batch = $1) AS feedback, "
        "(SELECT count(*) FROM sandbox_feedback f JOIN sandbox_interactions i USING (interaction_id) "
        "        WHERE i.batch = $1 AND f.rating IS NULL) AS feedback_null, "
        "(SELECT count(*) FROM observer_ratings o JOIN sandbox_interactions i USING (interaction_id) "
        "        WHERE i.batch = $1) AS observer, "
        "(SELECT count(*) FROM observer_ratings o JOIN sandbox_interactions i USING (interaction_id) "
        "        WHERE i.batch = $1 AND o.rating IS NULL) AS observer_null", [batch]).row(0, named=True)
    violations = warehouse.query(
        _RATING_VIOLATIONS.format(table="sandbox_feedback", key="interaction_id || '/' || position")
        + " UNION ALL "
        + _RATING_VIOLATIONS.format(table="observer_ratings", key="interaction_id || '/' || target || '/' || dimension"),
        [batch, batch])
    passed = violations.height == 0
    return CheckOutcome(
        passed=passed,
        description=("every rating is in 1..7 or NULL with a reason" if passed
                     else f"{violations.height} ratings are neither in 1..7 nor NULL with a reason"),
        metadata={**{k: int(v) for k, v in counts.items()}, "violations": violations.height,
                  "examples": [f"{r['source']} {r['key']}: {r['problem']}" for r in violations.head(5).iter_rows(named=True)]})


def check_interactions_complete(warehouse: Warehouse, batch: str, config: SandboxConfig) -> CheckOutcome:
    """Every (round, agent) of the config's world has an interaction with a non-empty draft and revision, its
    neighbours are exactly the world's seeded draw from the agent's social circle, and it has one feedback
    row per neighbour with positions 0..k-1."""
    world = World(config)
    world_id = config.world_id(batch)
    rows = warehouse.query(
        "SELECT i.round, i.agent_id, i.draft, i.revision, i.neighbour_ids, "
        "  (SELECT count(*) FROM sandbox_feedback f WHERE f.interaction_id = i.interaction_id) AS feedback_rows, "
        "  (SELECT list(f.neighbour_id ORDER BY f.position) FROM sandbox_feedback f "
        "     WHERE f.interaction_id = i.interaction_id) AS feedback_neighbours, "
        "  (SELECT coalesce(max(f.position), -1) FROM sandbox_feedback f "
        "     WHERE f.interaction_id = i.interaction_id) AS max_position "
        "FROM sandbox_interactions i WHERE i.world_id = ? AND i.round < ?", [world_id, config.rounds])
    found = {(r["round"], r["agent_id"]): r for r in rows.iter_rows(named=True)}
    expected = [(r, a) for r in range(config.rounds) for a in range(len(world))]
    missing = [k for k in expected if k not in found]
    problems = []
    for (r, a), row in sorted(found.items()):
        where = f"round {r} agent {a}"
        if not (row["draft"] or "").strip():
            problems.append(f"{where}: empty draft")
        if not (row["revision"] or "").strip():
            problems.append(f"{where}: empty revision")
        neighbours = list(row["neighbour_ids"] or [])
        if sorted(neighbours) != sorted(world.draw_neighbours(r, a)):
            problems.append(f"{where}: neighbours {neighbours} are not the world's draw")
        if not set(neighbours) <= set(world.social_circle(a)):
            problems.append(f"{where}: neighbours outside the social circle")
        if row["feedback_rows"] != len(neighbours) or row["max_position"] != len(neighbours) - 1:
            problems.append(f"{where}: {row['feedback_rows']} feedback rows for {len(neighbours)} neighbours")
        elif list(row["feedback_neighbours"] or []) != neighbours:
            problems.append(f"{where}: feedback order differs from neighbour_ids")
    passed = not missing and not problems
    return CheckOutcome(
        passed=passed,
        description=(f"all {len(expected)} interactions of {world_id} are complete" if passed
                     else f"{len(missing)} interactions missing, {len(problems)} incomplete in {world_id}"),
        metadata={"world_id": world_id, "expected": len(expected), "found": len(found), "missing": len(missing),
                  "problems": len(problems), "examples": ([f"missing round {r} agent {a}" for r, a in missing[:5]]
                                                          + problems[:5])})


def check_revisions_differ(warehouse: Warehouse, batch: str) -> CheckOutcome:
    """Rule: a revision that equals its draft after collapsing whitespace and case is no revision. The check
    warns if any interaction of the batch has one (such interactions give no realignment sample, counted as
    unrevised) and fails if the batch has no interactions to check; metadata gives the share of revisions that
    differ and up to five offending interaction ids."""
    frame = warehouse.query(
        "SELECT interaction_id, "
        "  lower(trim(regexp_replace(draft, '\\s+', ' ', 'g'))) = lower(trim(regexp_replace(revision, '\\s+', ' ', 'g'))) "
        "  AS same FROM sandbox_interactions WHERE batch = ?", [batch])
    total = frame.height
    same = frame.filter(frame["same"]) if total else frame
    share = (total - same.height) / total if total else None
    passed = total > 0 and same.height == 0
    return CheckOutcome(
        passed=passed,
        # A model that repeats its draft now and then is behaviour to look at, not broken data.
        severity="WARN" if total else "ERROR",
        description=("no interactions" if total == 0 else
                     f"{share:.1%} of {total} revisions differ from their drafts"
                     + (f"; {same.height} repeat their draft (no realignment sample)" if same.height else "")),
        metadata={"interactions": total, "identical": same.height, "share_differ": share,
                  "examples": same["interaction_id"].head(5).to_list() if same.height else []})


def check_outputs_clean(warehouse: Warehouse, batch: str, config: SandboxConfig) -> CheckOutcome:
    """Drafts and revisions are answers (sandbox/answers.py: non-empty, no template header, turn marker or
    rating line). Fails when the clean share of the batch's drafts and revisions is below `sandbox.min_clean_share`, or
    when the batch has none."""
    min_share = config.min_clean_share
    frame = warehouse.query("SELECT interaction_id, draft, revision FROM sandbox_interactions WHERE batch = ? "
                            "ORDER BY round, agent_id", [batch])
    unclean = [(row["interaction_id"], kind, row[kind]) for row in frame.iter_rows(named=True)
               for kind in ("draft", "revision") if not is_clean(row[kind])]
    total = 2 * frame.height
    drafts = sum(1 for _, kind, _ in unclean if kind == "draft")
    share = (total - len(unclean)) / total if total else None
    passed = share is not None and share >= min_share
    return CheckOutcome(
        passed=passed,
        description=("no interactions" if share is None else
                     f"{share:.1%} of {total} drafts and revisions are clean answers (bar {min_share:.0%})"),
        metadata={"answers": total, "clean_share": share, "unclean_drafts": drafts,
                  "unclean_revisions": len(unclean) - drafts, "min_share": min_share,
                  "examples": [f"{iid} {kind}: {(text or '')[:120]!r}" for iid, kind, text in unclean[:5]]})


TRANSCRIPT_CHECKS: tuple[Check, ...] = (
    Check("ratings_valid", check_ratings_valid),
    Check("interactions_complete", check_interactions_complete),
    Check("revisions_differ", check_revisions_differ),
    # answers that are not answers would poison every sample built from them
    Check("outputs_clean", check_outputs_clean, blocking=True),
)
SCORED_REVISION_CHECKS: tuple[Check, ...] = (Check("ratings_valid", check_ratings_valid),)
