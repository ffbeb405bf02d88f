"""Drafts and revisions are answers: trimmed, without template headers, chat turn markers or rating lines.

Small models run on past their answer (into invented `### Input:` turns) or copy the rating lines of the
feedback they were shown; `clean_answer` keeps the answer part, and `is_clean` is the rule the
`outputs_clean` check measures stored answers by.
"""

from __future__ import annotations

import re

from alignment_pipeline.llm.prompt_format import cut_at_stop

# A line that rates instead of answering: "Rating: 5", "- score 4: ...", "**Reason:** ...".
_RATING_LINE = re.compile(r"^[ \t*#>-]*(?:rating|reason|score)[ \t*]*(?::|[ \t]+\d)[^\n]*(?:\n|$)",
                          re.IGNORECASE | re.MULTILINE)


def clean_answer(text: str) -> str:
    """The answer part of a generated text: cut at the first template header or turn marker, rating and
    reason lines removed, trimmed."""
    return _RATING_LINE.sub("", cut_at_stop(text)).strip()


def is_clean(text: str | None) -> bool:
    """Non-empty and already clean (nothing `clean_answer` would remove)."""
    return bool(text and text.strip()) and clean_answer(text) == text.strip()
