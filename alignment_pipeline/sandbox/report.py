"""What a sandbox run and an observer scoring pass did, as small dataclasses with plain-value metadata, and
the before/after rating histogram."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alignment_pipeline.sandbox.config import SandboxConfig
from alignment_pipeline.warehouse.db import Warehouse


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def feedback_summary(warehouse: Warehouse, world_id: str, rounds: int) -> dict:
    """Interactions of the world's first `rounds` rounds and their neighbour ratings."""
    row = warehouse.query(
        "SELECT count(DISTINCT i.interaction_id) AS interactions, count(f.interaction_id) AS feedback, "
        "count(f.rating) AS rated, avg(f.rating) AS mean_rating "
        "FROM sandbox_interactions i LEFT JOIN sandbox_feedback f USING (interaction_id) "
        "WHERE i.world_id = ? AND i.round < ?", [world_id, rounds]).row(0, named=True)
    return {"interactions": row["interactions"], "feedback": row["feedback"], "rated": row["rated"],
            "null": row["feedback"] - row["rated"], "mean_rating": row["mean_rating"]}


@dataclass
class SandboxReport:
    batch: str
    world_id: str
    rounds: int
    agents: int
    interactions: int  # committed interactions of the world's rounds, this run's and earlier ones
    new_interactions: int
    skipped_interactions: int  # already committed before this run (a resume)
    llm_calls: int
    batches: int
    prompt_tokens: int
    completion_tokens: int
    backend_seconds: float
    seconds: float
    mean_feedback_rating: float | None
    feedback_ratings: int
    null_feedback_ratings: int
    per_round: list[dict] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of this run's wall time."""
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def build(cls, *, batch: str, world_id: str, config: SandboxConfig, rounds: list, skipped: int,
              seconds: float, feedback: dict) -> SandboxReport:
        return cls(
            batch=batch, world_id=world_id, rounds=config.rounds, agents=config.agents,
            interactions=feedback["interactions"], new_interactions=sum(r.interactions for r in rounds),
            skipped_interactions=skipped, llm_calls=sum(r.llm_calls for r in rounds),
            batches=sum(r.batches for r in rounds), prompt_tokens=sum(r.prompt_tokens for r in rounds),
            completion_tokens=sum(r.completion_tokens for r in rounds),
            backend_seconds=round(sum(r.backend_seconds for r in rounds), 3), seconds=round(seconds, 3),
            mean_feedback_rating=_round(feedback["mean_rating"]), feedback_ratings=feedback["rated"],
            null_feedback_ratings=feedback["null"], per_round=[r.as_dict() for r in rounds])

    def metadata(self) -> dict:
        return {
            "batch": self.batch, "world_id": self.world_id, "rounds": self.rounds, "agents": self.agents,
            "interactions": self.interactions, "new_interactions": self.new_interactions,
            "skipped_interactions": self.skipped_interactions, "llm_calls": self.llm_calls,
            "batches": self.batches, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "tokens_per_s": round(self.tokens_per_s, 2),
            "seconds": self.seconds, "backend_seconds": self.backend_seconds,
            "mean_feedback_rating": self.mean_feedback_rating, "feedback_ratings": self.feedback_ratings,
            "null_feedback_ratings": self.null_feedback_ratings,
        }


@dataclass
class ScoreReport:
    batch: str
    world_id: str
    interactions: int
    new_ratings: int  # observer ratings written by this pass
    llm_calls: int
    batches: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    mean_alignment_before: float | None
    mean_alignment_after: float | None
    mean_engagement_before: float | None
    mean_engagement_after: float | None
    share_improved: float | None  # of interactions with both alignment ratings
    null_ratings: int  # observer ratings stored as NULL (with a reason)
    per_model: dict = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def metadata(self) -> dict:
        return {
            "batch": self.batch, "world_id": self.world_id, "interactions": self.interactions,
            "new_ratings": self.new_ratings, "llm_calls": self.llm_calls, "batches": self.batches,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "tokens_per_s": round(self.tokens_per_s, 2), "seconds": self.seconds,
            "mean_alignment_before": self.mean_alignment_before, "mean_alignment_after": self.mean_alignment_after,
            "mean_engagement_before": self.mean_engagement_before,
            "mean_engagement_after": self.mean_engagement_after, "share_improved": self.share_improved,
            "null_ratings": self.null_ratings, "per_model": self.per_model,
        }


def score_summary(warehouse: Warehouse, batch: str, world_id: str) -> dict:
    """Means before/after, share improved, NULL observer ratings, and the same per agent model."""
    overall = warehouse.query(
        "SELECT count(*) AS interactions, avg(alignment_before) AS ab, avg(alignment_after) AS aa, "
        "avg(engagement_before) AS eb, avg(engagement_after) AS ea, avg(improved::INTEGER) AS improved "
        "FROM scored_revisions WHERE batch = ? AND world_id = ?", [batch, world_id]).row(0, named=True)
    nulls = warehouse.query(
        "SELECT count(*) AS n FROM observer_ratings o JOIN sandbox_interactions i USING (interaction_id) "
        "WHERE i.world_id = ? AND o.rating IS NULL", [world_id]).item()
    models = warehouse.query(
        "SELECT agent_model, count(*) AS interactions, avg(alignment_before) AS alignment_before, "
        "avg(alignment_after) AS alignment_after, avg(improved::INTEGER) AS share_improved "
        "FROM scored_revisions WHERE batch = ? AND world_id = ? GROUP BY agent_model ORDER BY agent_model",
        [batch, world_id])
    per_model = {row["agent_model"]: {k: (_round(v) if isinstance(v, float) else v) for k, v in row.items()
                                      if k != "agent_model"} for row in models.iter_rows(named=True)}
    return {"interactions": overall["interactions"], "mean_alignment_before": _round(overall["ab"]),
            "mean_alignment_after": _round(overall["aa"]), "mean_engagement_before": _round(overall["eb"]),
            "mean_engagement_after": _round(overall["ea"]), "share_improved": _round(overall["improved"]),
            "null_ratings": int(nulls), "per_model": per_model}


def rating_histogram_png(warehouse: Warehouse, batch: str, path: str | Path) -> Path:
    """Histogram of observer alignment ratings of drafts (before) and revisions (after) for a batch's
    scored revisions, written as a PNG. NULL ratings are counted in the legend, not drawn."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rating_histogram_figure(warehouse, batch).savefig(path, format="png")
    return path


def rating_histogram_figure(warehouse: Warehouse, batch: str):
    """The figure of `rating_histogram_png`."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global figure state, safe in worker threads

    from alignment_pipeline.images import wrapped_title

    frame = warehouse.query("SELECT alignment_before, alignment_after FROM scored_revisions WHERE batch = ?", [batch])
    edges = np.arange(0.75, 7.5, 0.5)  # half-point bins centred on 1, 1.5, ..., 7 (older worlds stored fractional expected values)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for offset, (column, label, colour) in zip((-0.11, 0.11), (("alignment_before", "draft (before)", "#d62728"),
                                                                ("alignment_after", "revision (after)", "#2ca02c")),
                                               strict=True):
        values = [v for v in frame[column].to_list() if v is not None] if frame.height else []
        nulls = frame.height - len(values)
        counts, _ = np.histogram(values, bins=edges)
        mean = f", mean {np.mean(values):.2f}" if values else ""
        ax.bar(centres + offset, counts, width=0.2, color=colour,
               label=f"{label}: n={len(values)}{mean}, NULL {nulls}")
    ax.set_xlabel("observer alignment rating (1..7)")
    ax.set_ylabel("interactions")
    ax.set_xticks(range(1, 8))
    # The batch (a file name, often long) on a line of its own: the title stays whole within the chart.
    ax.set_title(wrapped_title("Observer alignment: drafts (before) vs revisions (after)") + "\n"
                 + wrapped_title(f"batch {batch}"), fontsize=10)
    ax.margins(y=0.35)  # headroom so the legend does not cover the bars
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig
