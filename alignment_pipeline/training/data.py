"""Training data: prompt groups from the warehouse, tokenised with an exact prompt/response boundary, and
packed into batches of whole groups (a prompt with all of its responses).

Samples are stored without a template; each is rendered here in the format of the model being trained (its
chat template, else Alpaca: llm/prompt_format.py) and each response ends with that format's end-of-turn
token, so a checkpoint learns the format it is served with."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from alignment_pipeline.llm.prompt_format import Prompt, PromptFormat, prompt_format
from alignment_pipeline.warehouse.db import Warehouse

SAMPLE_TYPES = ("imitation", "self_critique", "realignment")


@dataclass(frozen=True)
class PromptGroup:
    """One prompt with its rated responses (the unit the contrastive losses compare within)."""

    instruction: str
    input: str
    responses: list[str]
    ratings: list[float]
    key: str = ""  # prompt_key in the warehouse; identifies the group in logs
    batches: tuple[str, ...] = field(default=())  # samples batches the responses came from (lineage)

    def __post_init__(self) -> None:
        where = f"prompt group {self.key or self.instruction[:40]!r}"
        if len(self.responses) != len(self.ratings):
            raise ValueError(f"{where}: {len(self.responses)} responses but {len(self.ratings)} ratings")
        if not self.responses:
            raise ValueError(f"{where}: no responses")
        for i, rating in enumerate(self.ratings):
            if not isinstance(rating, (int, float)) or not math.isfinite(rating):
                raise ValueError(f"{where}: rating {i} is {rating!r}; ratings must be finite numbers")

    @property
    def prompt(self) -> Prompt:
        return Prompt(self.instruction, self.input)

    def best_index(self) -> int:
        """The first response with the highest rating."""
        return max(range(len(self.ratings)), key=lambda i: (self.ratings[i], -i))


def load_groups(warehouse: Warehouse, sample_type: str | None) -> list[PromptGroup]:
    """alignment_samples grouped by (sample_type, prompt_key), NULL ratings excluded, in a stable order
    (as the samples_grouped view groups them). `sample_type` None takes every type; a prompt of one type
    never merges with another type's, since their ratings mean different things."""
    if sample_type is not None and sample_type not in SAMPLE_TYPES:
        raise ValueError(f"unknown sample_type {sample_type!r}; choose one of {', '.join(SAMPLE_TYPES)}")
    where = "rating IS NOT NULL" + (" AND sample_type = ?" if sample_type else "")
    frame = warehouse.query(
        "SELECT sample_type, prompt_key, instruction, input, response, rating, batch FROM alignment_samples "
        f"WHERE {where} ORDER BY sample_type, prompt_key, sample_id",
        [sample_type] if sample_type else None,
    )
    groups: list[PromptGroup] = []
    if frame.height == 0:
        return groups
    for (kind, key), part in frame.group_by(["sample_type", "prompt_key"], maintain_order=True):
        rows = part.to_dicts()
        first = rows[0]
        groups.append(PromptGroup(
            instruction=first["instruction"], input=first["input"] or "",
            responses=[r["response"] for r in rows], ratings=[float(r["rating"]) for r in rows],
            key=f"{kind}:{key}", batches=tuple(sorted({r["batch"] for r in rows})),
        ))
    return groups


def samples_batches(groups: list[PromptGroup]) -> list[str]:
    return sorted({b for g in groups for b in g.batches})


# -- tokenisation ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenizedGroup:
    """Token ids of one group: the (left-truncated) prompt once, then each response followed by EOS."""

    index: int  # position of the group in the training list (its id in batch logs and reference caches)
    prompt_ids: list[int]
    response_ids: list[list[int]]
    ratings: list[float]

    @property
    def packed_length(self) -> int:
        return len(self.prompt_ids) + sum(len(r) for r in self.response_ids)

    @property
    def data_tokens(self) -> int:
        """Tokens of the data consumed: the prompt plus every response (the unit of tokens/s)."""
        return self.packed_length


def special_prefix(tokenizer) -> list[int]:
    """The special tokens the tokenizer puts in front of a text (e.g. Llama's BOS), found by asking it,
    so that prompts start the way the model saw text in pre-training."""
    with_specials = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    for start in range(len(with_specials) - len(plain) + 1):
        if with_specials[start:start + len(plain)] == plain:
            return list(with_specials[:start])
    return []


def tokenize_group(tokenizer, group: PromptGroup, index: int, *, max_length: int, min_prompt_tokens: int = 16,
                   prefix: list[int] | None = None, fmt: PromptFormat | None = None) -> TokenizedGroup:
    """Prompt and responses are tokenised separately and concatenated (never merged across the boundary);
    each response gets the format's end-of-turn token (EOS for Alpaca). Every (prompt, response) sequence fits `max_length`: the prompt is cut from its
    left (after any BOS) so the responses survive; a response is cut on its right only when it alone would
    leave fewer than `min_prompt_tokens` of prompt."""
    fmt = prompt_format(tokenizer) if fmt is None else fmt
    end = fmt.end_of_turn_ids(tokenizer)
    # A chat template writes its own start tokens; plain text gets the tokenizer's BOS.
    prefix = [] if fmt.chat else special_prefix(tokenizer) if prefix is None else prefix
    responses, ratings = group.responses, list(group.ratings)
    prompt_body = tokenizer(fmt.render(group.prompt), add_special_tokens=False)["input_ids"]
    prompt_full = prefix + prompt_body
    keep_prompt = min(len(prompt_full), min_prompt_tokens)
    if max_length <= keep_prompt:
        raise ValueError(f"max_length {max_length} leaves no room for a response after {keep_prompt} prompt tokens")
    response_ids = []
    for text in responses:
        ids = tokenizer(text.strip(), add_special_tokens=False)["input_ids"] + end
        response_ids.append(ids[:max_length - keep_prompt])
    budget = max_length - max(len(r) for r in response_ids)
    if len(prompt_full) > budget:
        # Left truncation keeps the end of the prompt (the response header) adjacent to the response.
        tail = budget - len(prefix)
        prompt_ids = prefix + prompt_body[len(prompt_body) - tail:] if tail > 0 else prompt_full[-budget:]
    else:
        prompt_ids = prompt_full
    for ids in response_ids:
        row = prompt_ids + ids
        # The boundary: the row is exactly the prompt ids followed by the response ids.
        assert row[:len(prompt_ids)] == prompt_ids and row[len(prompt_ids):] == ids, "prompt/response boundary"
        assert len(row) <= max_length, f"row of {len(row)} tokens exceeds max_length {max_length}"
    return TokenizedGroup(index=index, prompt_ids=prompt_ids, response_ids=response_ids, ratings=ratings)


def limit_responses(group: TokenizedGroup, k: int | None, *, seed: int, epoch: int) -> TokenizedGroup:
    """At most `k` responses of a group: the best-rated one and a sample of the others drawn afresh each
    epoch (deterministic given seed, epoch and group), so over epochs every response takes part."""
    n = len(group.response_ids)
    if k is None or n <= k:
        return group
    best = max(range(n), key=lambda i: (group.ratings[i], -i))
    others = [i for i in range(n) if i != best]
    rng = random.Random((seed * 1_000_003 + epoch) * 1_000_033 + group.index)
    chosen = sorted([best] + rng.sample(others, k - 1))
    return TokenizedGroup(index=group.index, prompt_ids=group.prompt_ids,
                          response_ids=[group.response_ids[i] for i in chosen],
                          ratings=[group.ratings[i] for i in chosen])


def tokenize_groups(tokenizer, groups: list[PromptGroup], *, max_length: int, min_prompt_tokens: int = 16
                    ) -> list[TokenizedGroup]:
    prefix, fmt = special_prefix(tokenizer), prompt_format(tokenizer)
    return [tokenize_group(tokenizer, g, i, max_length=max_length, min_prompt_tokens=min_prompt_tokens,
                           prefix=prefix, fmt=fmt) for i, g in enumerate(groups)]


# -- batching -------------------------------------------------------------------------------------

def make_batches(groups: list[TokenizedGroup], prompts_per_batch: int, *, seed: int, epoch: int,
                 pool_batches: int = 32) -> list[list[int]]:
    """Batches of group indices, each holding whole groups. Length-grouped to cut padding: shuffle, sort
    by packed length within pools of `pool_batches` batches, cut, then shuffle the batch order.
    Deterministic given (seed, epoch)."""
    if prompts_per_batch < 1:
        raise ValueError("prompts_per_batch must be >= 1")
    rng = random.Random(seed * 7919 + epoch)
    order = [g.index for g in groups]
    rng.shuffle(order)
    lengths = {g.index: g.packed_length for g in groups}
    pool = prompts_per_batch * pool_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches.extend(chunk[j:j + prompts_per_batch] for j in range(0, len(chunk), prompts_per_batch))
    rng.shuffle(batches)
    return batches
