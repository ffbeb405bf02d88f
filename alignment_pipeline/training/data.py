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

    def context_ids(self, tokenizer, prompt_text: str, ids: list[int]) -> list[int]:
        """The token ids of the rendered prompt that the responses are trained to follow: `ids` as they are. A
        Chain-of-Hindsight segment leaves some out (training/hindsight.py)."""
        return ids


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
class GroupSource:
    """A group's token ids before any cut (the prompt without its prefix; each response with its end-of-turn
    token) and the limits they are cut to: what `limit_responses` re-fits the responses it keeps from."""

    prefix: tuple[int, ...]
    prompt_body: tuple[int, ...]
    responses: tuple[tuple[int, ...], ...]
    max_length: int
    min_prompt_tokens: int


@dataclass(frozen=True)
class TokenizedGroup:
    """Token ids of one group: the (left-truncated) prompt once, then each response followed by EOS."""

    index: int  # position of the group in the training list (its id in batch logs and reference caches)
    prompt_ids: list[int]
    response_ids: list[list[int]]
    ratings: list[float]
    source: GroupSource | None = field(default=None, repr=False, compare=False)

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


def continuation_ids(tokenizer, prompt_text: str, prompt_ids: list[int], text: str) -> list[int]:
    """The ids of `text` as the model meets it right after the prompt: prompt and text are tokenised together
    and split where the prompt's own ids end, so a SentencePiece tokenizer (Llama's legacy behaviour) puts no
    dummy "▁" prefix in front of the response, as it would for a text tokenised alone. When the two merge
    across the boundary (a prompt ending in a space, for a byte-level BPE), the prompt's own ids are what the
    model is served with, so the text is tokenised alone."""
    joint = tokenizer(prompt_text + text, add_special_tokens=False)["input_ids"]
    if joint[:len(prompt_ids)] == prompt_ids and len(joint) > len(prompt_ids):
        return joint[len(prompt_ids):]
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fit_group(source: GroupSource, keep: list[int] | None = None) -> tuple[list[int], list[list[int]]]:
    """(prompt ids, response ids) of the responses `keep` (default all), every (prompt, response) within
    `max_length`. The prompt is shared by the responses, so its cut is decided by the responses actually
    trained together:

    - the prompt is cut from its left (after any BOS), only as far as the longest kept response needs;
    - but it keeps at least max(min_prompt_tokens, max_length // 2) tokens (all of it when shorter; half the
      window, as TRL's max_prompt_length 512 of max_length 1024): a response longer than the rest of the
      window is cut on its right, rather than every response of the group losing its question to it.
    """
    idx = range(len(source.responses)) if keep is None else keep
    responses = [list(source.responses[i]) for i in idx]
    prefix, body = list(source.prefix), list(source.prompt_body)
    full = len(prefix) + len(body)
    floor = min(full, max(source.min_prompt_tokens, source.max_length // 2))
    if source.max_length <= floor:
        raise ValueError(f"max_length {source.max_length} leaves no room for a response after {floor} prompt "
                         "tokens")
    keep_prompt = min(full, max(source.max_length - max(len(r) for r in responses), floor))
    if keep_prompt < full:
        # Left truncation keeps the end of the prompt (the response header) adjacent to the response.
        tail = keep_prompt - len(prefix)
        prompt_ids = prefix + body[len(body) - tail:] if tail > 0 else (prefix + body)[-keep_prompt:]
    else:
        prompt_ids = prefix + body
    response_ids = [r[:source.max_length - len(prompt_ids)] for r in responses]
    for ids in response_ids:
        assert len(prompt_ids) + len(ids) <= source.max_length, "row exceeds max_length"
    return prompt_ids, response_ids


def tokenize_group(tokenizer, group: PromptGroup, index: int, *, max_length: int, min_prompt_tokens: int = 16,
                   prefix: list[int] | None = None, fmt: PromptFormat | None = None) -> TokenizedGroup:
    """The prompt is tokenised alone (as it is served); each response is tokenised as its continuation
    (`continuation_ids`: ids(prompt) + ids(response) is what the model reads in running text) and ends with the
    format's end-of-turn token (EOS for Alpaca). Every (prompt, response) sequence fits `max_length`, cut as
    `fit_group` says."""
    fmt = prompt_format(tokenizer) if fmt is None else fmt
    end = fmt.end_of_turn_ids(tokenizer)
    # A chat template writes its own start tokens; plain text gets the tokenizer's BOS.
    prefix = [] if fmt.chat else special_prefix(tokenizer) if prefix is None else prefix
    prompt_text = fmt.render(group.prompt)
    prompt_body = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    responses = []
    for text in group.responses:
        responses.append(tuple(continuation_ids(tokenizer, prompt_text, prompt_body, text.strip()) + end))
    # After the responses: they are tokenised as they continue the full prompt text.
    prompt_body = group.context_ids(tokenizer, prompt_text, prompt_body)
    source = GroupSource(prefix=tuple(prefix), prompt_body=tuple(prompt_body), responses=tuple(responses),
                         max_length=max_length, min_prompt_tokens=min_prompt_tokens)
    prompt_ids, response_ids = fit_group(source)
    return TokenizedGroup(index=index, prompt_ids=prompt_ids, response_ids=response_ids,
                          ratings=list(group.ratings), source=source)


def limit_responses(group: TokenizedGroup, k: int | None, *, seed: int, epoch: int) -> TokenizedGroup:
    """At most `k` responses of a group: the best-rated one and a sample of the others drawn afresh each
    epoch (deterministic given seed, epoch and group), so over epochs every response takes part. The prompt is
    re-fitted to the responses kept (`fit_group`): a long response left out does not cut it."""
    n = len(group.response_ids)
    if k is None or n <= k:
        return group
    best = max(range(n), key=lambda i: (group.ratings[i], -i))
    others = [i for i in range(n) if i != best]
    rng = random.Random((seed * 1_000_003 + epoch) * 1_000_033 + group.index)
    chosen = sorted([best] + rng.sample(others, k - 1))
    if group.source is not None:
        prompt_ids, response_ids = fit_group(group.source, chosen)
    else:
        prompt_ids, response_ids = group.prompt_ids, [group.response_ids[i] for i in chosen]
    return TokenizedGroup(index=group.index, prompt_ids=prompt_ids, response_ids=response_ids,
                          ratings=[group.ratings[i] for i in chosen], source=group.source)


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


def budget_groups(groups: list[TokenizedGroup], prompts_per_batch: int, *, seed: int, batches_per_step: int,
                  steps: int) -> set[int] | None:
    """The indices of the groups that `steps` optimizer steps of `batches_per_step` batches reach, walking the
    same seeded batches as the training loop (epoch after epoch); None when they reach every group. A reference
    pass needs no more than these."""
    reached: set[int] = set()
    epoch = done = 0
    while done < steps:
        batches = make_batches(groups, prompts_per_batch, seed=seed, epoch=epoch)
        for start in range(0, len(batches), batches_per_step):
            if done == steps:
                break
            reached.update(i for b in batches[start:start + batches_per_step] for i in b)
            done += 1
        if len(reached) == len(groups):
            return None
        epoch += 1
    return reached
