"""A few interactions of a batch as markdown, for people to read in the UI: the question, the draft, each
neighbour's feedback with its rating, the revision, and the observers' scores once they exist."""

from __future__ import annotations

from alignment_pipeline.warehouse.db import Warehouse

CLIP = 400  # characters of one text shown; the warehouse holds all of it


def clip(text: str | None, limit: int = CLIP) -> str:
    """One line of at most `limit` characters, markdown's angle brackets escaped (the UI renders no HTML)."""
    flat = " ".join((text or "").split())
    flat = flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"
    return flat.replace("<", "&lt;").replace(">", "&gt;") or "(empty)"


def _rating(value: float | None, why: str | None = None) -> str:
    return f"{value:.1f}/7" if value is not None else f"no rating ({why or 'unparsed'})"


def transcript_preview(warehouse: Warehouse, batch: str, n: int = 3) -> str:
    """Markdown of the batch's first `n` interactions in (round, agent) order; an empty string without any."""
    interactions = warehouse.query(
        "SELECT interaction_id, round, agent_id, agent_label, agent_model, question, draft, revision "
        "FROM sandbox_interactions WHERE batch = ? ORDER BY round, agent_id LIMIT ?", [batch, n]).to_dicts()
    if not interactions:
        return ""
    ids = [i["interaction_id"] for i in interactions]
    feedback = warehouse.query(
        "SELECT interaction_id, neighbour_id, feedback, rating, null_reason FROM sandbox_feedback "
        "WHERE list_contains(?, interaction_id) ORDER BY interaction_id, position", [ids]).to_dicts()
    observed = warehouse.query(
        "SELECT interaction_id, target, dimension, rating FROM observer_ratings "
        "WHERE list_contains(?, interaction_id)", [ids]).to_dicts()
    scores = {(o["interaction_id"], o["target"], o["dimension"]): o["rating"] for o in observed}
    parts = []
    for i in interactions:
        iid = i["interaction_id"]
        lines = [f"#### Round {i['round']}, agent {i['agent_id']} ({i['agent_label']}, {i['agent_model']})",
                 f"**Question:** {clip(i['question'])}", "", f"**Draft:** {clip(i['draft'])}", "",
                 "**Feedback:**"]
        lines += [f"- neighbour {f['neighbour_id']}, {_rating(f['rating'], f['null_reason'])}: {clip(f['feedback'], 200)}"
                  for f in feedback if f["interaction_id"] == iid] or ["- none"]
        lines += ["", f"**Revision:** {clip(i['revision'])}", ""]
        if any(key[0] == iid for key in scores):
            cells = [f"{dimension} {_score(scores.get((iid, 'draft', dimension)))} → "
                     f"{_score(scores.get((iid, 'revision', dimension)))}" for dimension in ("alignment", "engagement")]
            lines.append(f"**Observers (1-7, draft → revision):** {'; '.join(cells)}")
        else:
            lines.append("**Observers:** not scored yet (scored_revisions)")
        parts.append("\n".join(lines))
    return "\n\n---\n\n".join(parts)


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"
