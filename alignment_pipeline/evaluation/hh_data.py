"""HH, HH-A and the HH preference task, built from the HH-RLHF test dialogues shipped in assets/benchmarks/.

- HH: the first human turn of every harmless-base and helpful-base test dialogue (one task with both files),
  deduplicated (the first occurrence keeps its row id, harmless-base first).
- HH-A, as the paper builds it: the same harmful questions with the misaligned reply appended, here the
  rejected (human-dispreferred) assistant reply of harmless-base test dialogues of a single exchange, so that
  the appended reply answers that very question.
- hh_preference: the dialogue before the last assistant reply as context, the chosen and the rejected last
  reply as the two choices (chosen correct).

- the positive control's split: the dialogues whose first human turn falls in a fixed, hashed CONTROL_PERCENT of
  the prompts. The control checkpoints train on them (SFT on `chosen`, DPO on chosen/rejected), so every HH task
  leaves them out: no evaluated item shares its first question with a control training dialogue.
Prompts the society was seeded with (the original Stable Alignment question list, which shares 356 prompts with
harmless-base test, and the prompts in this warehouse) are removed from HH and HH-A; how many is reported.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from alignment_pipeline.evaluation.data import read_rows

HARMLESS, HELPFUL = "hh_harmless_base_test.jsonl.gz", "hh_helpful_base_test.jsonl.gz"
SOCIETY_QUESTIONS = "stable_alignment_hh_questions.txt"
#: share (%) of HH test prompts held out of every HH task for the positive control's training
CONTROL_PERCENT = 20
_TURN = re.compile(r"\n\n(Human|Assistant): ?")


@dataclass(frozen=True)
class HHItem:
    file: str
    item_id: int  # row index in `file`
    request: str  # what the evaluated model is asked (HH-A: the question with the misaligned reply appended)
    question: str


@dataclass(frozen=True)
class HHItems:
    items: list[HHItem]
    seeded_removed: int  # distinct prompts left out because the society was seeded with them
    duplicates_removed: int
    control_removed: int = 0  # distinct prompts left out because the positive control trains on them


def turns(dialogue: str) -> list[tuple[str, str]]:
    """[(speaker, text)] of an HH-RLHF dialogue ("\\n\\nHuman: ...\\n\\nAssistant: ...")."""
    parts = _TURN.split(dialogue)
    return [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def is_control(question: str) -> bool:
    """Whether a first human turn belongs to the positive control's training split (an unseeded md5 of the
    normalised text: the same prompt is on the same side in every file and every run)."""
    digest = hashlib.md5(normalise(question).encode(), usedforsecurity=False).hexdigest()
    return int(digest[:8], 16) % 100 < CONTROL_PERCENT


def first_question(dialogue: str) -> str:
    t = turns(dialogue)
    return t[0][1] if t and t[0][0] == "Human" else ""


def society_prompts() -> set[str]:
    return {normalise(r["text"]) for r in read_rows(SOCIETY_QUESTIONS) if r["text"].strip()}


def hh_items(seeded: Iterable[str] = ()) -> HHItems:
    """HH: deduplicated first human turns of both test files, seeded prompts removed."""
    return _dedup(((name, row, t[0][1], t[0][1]) for name in (HARMLESS, HELPFUL)
                   for row, d in enumerate(read_rows(name)) if (t := turns(d["chosen"])) and t[0][0] == "Human"),
                  seeded)


def hh_a_items(seeded: Iterable[str] = ()) -> HHItems:
    """HH-A: harmless-base single-exchange dialogues, the rejected reply appended to the question."""
    out = []
    for row, d in enumerate(read_rows(HARMLESS)):
        rejected = turns(d["rejected"])
        if [s for s, _ in rejected] != ["Human", "Assistant"] or not rejected[1][1]:
            continue
        question, reply = rejected[0][1], rejected[1][1]
        out.append((HARMLESS, row, f"{question}\n{reply}", question))
    return _dedup(out, seeded)


def _dedup(rows: Iterable[tuple[str, int, str, str]], seeded: Iterable[str]) -> HHItems:
    banned = society_prompts() | {normalise(s) for s in seeded}
    seen: set[str] = set()
    removed: set[str] = set()
    control: set[str] = set()
    items, duplicates = [], 0
    for name, row, request, question in rows:
        key = normalise(question)
        if not key:
            continue
        if key in banned:
            removed.add(key)
            continue
        if is_control(question):  # the positive control trains on it
            control.add(key)
            continue
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        items.append(HHItem(name, row, request, question))
    return HHItems(items, len(removed), duplicates, len(control))


def preference_docs(split: str = "eval") -> list[tuple[str, int, dict]]:
    """(file, row, doc) of the preference task: doc = {context, chosen, rejected}; rows whose two dialogues do
    not share everything before the last reply, or whose last replies are equal, are left out. `split`: eval
    (the task's items) or control (the positive control's training pairs): the two never share a first question."""
    if split not in ("eval", "control"):
        raise ValueError(f"unknown split {split!r}; choose eval or control")
    out = []
    for name in (HARMLESS, HELPFUL):
        for row, d in enumerate(read_rows(name)):
            last = [_last_reply(d["chosen"]), _last_reply(d["rejected"])]
            if None in last:
                continue
            (ctx_c, chosen), (ctx_r, rejected) = last
            if ctx_c != ctx_r or not chosen or not rejected or chosen == rejected:
                continue
            if is_control(first_question(d["chosen"])) != (split == "control"):
                continue
            out.append((name, row, {"context": ctx_c, "chosen": chosen, "rejected": rejected}))
    return out


def _last_reply(dialogue: str) -> tuple[str, str] | None:
    cut = dialogue.rfind("\n\nAssistant:")
    if cut < 0:
        return None
    head = dialogue[:cut + len("\n\nAssistant:")]
    return head, dialogue[cut + len("\n\nAssistant:"):].strip()
