"""A few samples of a batch as a markdown table, for people to read in the UI: for each sample type, one prompt
with its responses from the best rated down."""

from __future__ import annotations

from alignment_pipeline.samples.config import SAMPLE_TYPES
from alignment_pipeline.warehouse.db import Warehouse

CLIP = 160  # characters of one cell; the warehouse holds all of it


def cell(text: str | None, limit: int = CLIP) -> str:
    """A table cell: one line, at most `limit` characters, pipes and angle brackets escaped."""
    flat = " ".join((text or "").split())
    flat = flat if len(flat) <= limit else flat[:limit - 1].rstrip() + "…"
    return flat.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;") or "(empty)"


def sample_preview(warehouse: Warehouse, batch: str, responses: int = 3) -> str:
    """Markdown table of one prompt per sample type (its first by prompt key) with up to `responses` of its
    responses, best rated first; an empty string when the batch has no samples."""
    frame = warehouse.query(
        "WITH first AS (SELECT sample_type, min(prompt_key) AS prompt_key FROM alignment_samples WHERE batch = ? "
        "               GROUP BY sample_type) "
        "SELECT s.sample_type, s.instruction, s.input, s.response, s.rating, s.rating_source, "
        "       row_number() OVER (PARTITION BY s.sample_type ORDER BY s.rating DESC NULLS LAST, s.sample_id) AS rank "
        "FROM alignment_samples s JOIN first f USING (sample_type, prompt_key) WHERE s.batch = ? "
        "QUALIFY rank <= ?", [batch, batch, responses])
    if not frame.height:
        return ""
    order = {t: i for i, t in enumerate(SAMPLE_TYPES)}
    rows = sorted(frame.to_dicts(), key=lambda r: (order.get(r["sample_type"], len(order)), r["rank"]))
    lines = ["| type | prompt | response | rating (1-7) | rated by |", "|---|---|---|---|---|"]
    for r in rows:
        prompt = r["instruction"] + (f"\n{r['input']}" if r["input"] else "")
        rating = "—" if r["rating"] is None else f"{r['rating']:.1f}"
        # The prompt is shown once per group: the rows below it are its other responses.
        shown = cell(prompt, 120) if r["rank"] == 1 else "〃"
        lines.append(f"| {r['sample_type']} | {shown} | {cell(r['response'])} | {rating} | {r['rating_source']} |")
    return "\n".join(lines)
