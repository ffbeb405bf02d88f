"""What a researcher reads first after a run: are the sandbox's answers answers, are its ratings ratings, did
revision move the observers, how many samples of each type, and the benchmark table."""

from __future__ import annotations

import math
from collections.abc import Sequence

from alignment_pipeline.evaluation.columns import MEASURED as MEASURED_COLUMNS
from alignment_pipeline.evaluation.verdicts import verdict_lines
from alignment_pipeline.sandbox.answers import is_clean
from alignment_pipeline.warehouse.db import Warehouse

_BENCHMARK_COLUMNS = tuple(c.name for c in MEASURED_COLUMNS)


def paired_difference(before: Sequence[float], after: Sequence[float]) -> dict:
    """Mean of after − before over pairs, with a two-sided 95% t interval (None where n < 2)."""
    diffs = [a - b for b, a in zip(before, after, strict=True)]
    n = len(diffs)
    if n == 0:
        return {"n": 0, "mean_diff": None, "ci95_low": None, "ci95_high": None}
    mean = sum(diffs) / n
    if n < 2:
        return {"n": n, "mean_diff": mean, "ci95_low": None, "ci95_high": None}
    from scipy.stats import t

    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean_diff": mean, "ci95_low": mean - half, "ci95_high": mean + half}


def sandbox_quality(warehouse: Warehouse, batch: str | None = None) -> dict:
    """Shares of clean drafts and revisions and of parsed ratings, how often an agent's neighbours disagree,
    and the observers' paired before/after differences; over one batch or every batch."""
    where, params = ("WHERE i.batch = ?", [batch]) if batch is not None else ("", [])
    answers = warehouse.query(f"SELECT draft, revision FROM sandbox_interactions i {where}", params)
    texts = answers["draft"].to_list() + answers["revision"].to_list()
    feedback = warehouse.query(
        "SELECT f.interaction_id, f.rating FROM sandbox_feedback f JOIN sandbox_interactions i "
        f"USING (interaction_id) {where}", params)
    observers = warehouse.query(
        "SELECT o.rating, o.rating_method FROM observer_ratings o JOIN sandbox_interactions i USING (interaction_id) "
        f"{where}", params)
    by_interaction: dict[str, list[float]] = {}
    for iid, rating in feedback.iter_rows():
        if rating is not None:
            by_interaction.setdefault(iid, []).append(rating)
    comparable = [r for r in by_interaction.values() if len(r) >= 2]
    pairs = warehouse.query(
        "SELECT s.alignment_before, s.alignment_after, s.engagement_before, s.engagement_after "
        f"FROM scored_revisions s JOIN sandbox_interactions i USING (interaction_id) {where}", params)
    rows = list(pairs.iter_rows(named=True))

    def paired(dimension: str) -> dict:
        both = [(r[f"{dimension}_before"], r[f"{dimension}_after"]) for r in rows
                if r[f"{dimension}_before"] is not None and r[f"{dimension}_after"] is not None]
        return paired_difference([b for b, _ in both], [a for _, a in both])

    return {
        "interactions": answers.height,
        "clean_share": _share(sum(map(is_clean, texts)), len(texts)),
        "feedback_ratings": feedback.height,
        "feedback_parsed_share": _share(feedback["rating"].count(), feedback.height),
        "observer_ratings": observers.height,
        # a rating drawn from log-probs (observer_replies: scale) is a rating, not a parsed reply
        "observer_parsed_share": _share((observers["rating_method"] == "parsed").sum(), observers.height),
        "observer_scale_share": _share((observers["rating_method"] == "scale").sum(), observers.height),
        "neighbours_disagree_share": _share(sum(len(set(r)) > 1 for r in comparable), len(comparable)),
        "alignment": paired("alignment"),
        "engagement": paired("engagement"),
    }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "—" if value is None else format(value, spec)


def checkpoint_lines(warehouse: Warehouse) -> list[str]:
    """Which checkpoints trained (with their steps) and, one line each, which did not and why."""
    rows = warehouse.query("SELECT name, steps, note FROM checkpoints ORDER BY created_at, name").to_dicts()
    if not rows:
        return []
    trained = [f"{r['name']} ({r['steps']})" for r in rows if r["note"] is None]
    lines = ["checkpoints trained (optimizer steps): " + (", ".join(trained) or "none")]
    lines += [f"  {r['name']} not trained: {r['note']}" for r in rows if r["note"] is not None]
    return lines


def lineage_summary(warehouse: Warehouse) -> str:
    """Plain-text report of the whole warehouse: sandbox quality, before/after, samples per type, benchmarks."""
    q = sandbox_quality(warehouse)
    lines = [
        f"sandbox: {q['interactions']} interactions; clean drafts and revisions {_fmt(q['clean_share'], '.0%')}; "
        f"parsed ratings: neighbours {_fmt(q['feedback_parsed_share'], '.0%')} of {q['feedback_ratings']}, "
        f"observers {_fmt(q['observer_parsed_share'], '.0%')} of {q['observer_ratings']}"
        + (f" ({q['observer_scale_share']:.0%} drawn from their log-probs)" if q["observer_scale_share"] else "")
        + "; neighbours of an agent "
        f"disagree in {_fmt(q['neighbours_disagree_share'], '.0%')} of interactions",
        "observers, revision minus draft (paired mean, 95% interval):",
    ]
    for dimension in ("alignment", "engagement"):
        d = q[dimension]
        lines.append(f"  {dimension:<10} {_fmt(d['mean_diff'], '+.2f')} "
                     f"[{_fmt(d['ci95_low'], '+.2f')}, {_fmt(d['ci95_high'], '+.2f')}]  n={d['n']}")
    counts = warehouse.query("SELECT sample_type, count(*) AS samples, count(DISTINCT prompt_key) AS prompts "
                             "FROM alignment_samples GROUP BY 1 ORDER BY 1")
    lines.append("samples: " + (", ".join(f"{r['sample_type']} {r['samples']} ({r['prompts']} prompts)"
                                          for r in counts.iter_rows(named=True)) or "none"))
    lines += checkpoint_lines(warehouse)
    lines += benchmark_lines(warehouse)
    return "\n".join(lines)


def benchmark_lines(warehouse: Warehouse) -> list[str]:
    """Each measured model's cells: value [95% interval] n, and for checkpoints Δ against base on the same items
    (`*`: its interval excludes zero). mic_proxy (not MIC) is never shown here."""
    fields = [f"{c}{s}" for c in _BENCHMARK_COLUMNS for s in ("", "_low", "_high", "_n", "_diff", "_sig")]
    table = warehouse.query("SELECT model, kind, self_judged, datasets, " + ", ".join(fields) +
                            " FROM benchmark_table WHERE source = 'measured' ORDER BY evaluated_at, model")
    if not table.height:
        return []
    judged = any(table["self_judged"].drop_nulls().to_list())
    lines = ["benchmarks (HH/HH-A: judge score 1-10" + (", self-judged" if judged else "") + "; hh_preference: "
             "length-normalised accuracy; others: accuracy; value [95% interval] n, Δ vs base, * = interval "
             "excludes 0):"]
    lines.append("  " + f"{'model':<22} " + " ".join(f"{c:>26}" for c in _BENCHMARK_COLUMNS))
    for r in table.iter_rows(named=True):
        cells = []
        for c in _BENCHMARK_COLUMNS:
            if r[c] is None:
                cells.append(f"{'—':>26}")
                continue
            text = f"{r[c]:.2f} [{_fmt(r[f'{c}_low'])},{_fmt(r[f'{c}_high'])}] {r[f'{c}_n']}"
            if r["kind"] != "base" and r[f"{c}_diff"] is not None:
                text += f" {r[f'{c}_diff']:+.2f}" + ("*" if r[f"{c}_sig"] else "")
            cells.append(f"{text:>26}")
        lines.append("  " + f"{r['model']:<22} " + " ".join(cells))
    verdicts = verdict_lines(warehouse)
    if verdicts:
        lines.append("verdicts (paired 95% intervals on the same items; better/worse only where they exclude 0):")
        lines += [f"  {v}" for v in verdicts]
    return lines
