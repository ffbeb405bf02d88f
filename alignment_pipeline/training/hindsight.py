"""Chain-of-Hindsight (Liu et al., arXiv 2302.02676): training sequences of responses preceded by hindsight feedback,
and the chat template that serves the trained model after its positive feedback.

Data. Each prompt's best response is paired with every response rated strictly lower (the DPO baseline's pairs), and
each pair becomes a chain in both orders, as CoH presents them, with a feedback pair drawn per chain by a seeded
generator from training.coh_positive_feedback / coh_negative_feedback and training.coh_feedback_templates (CoH's
Algorithm 1 samples a feedback template per chain):

    <prompt> A helpful answer:\\n<better>\\n\\nAn unhelpful answer:\\n<worse><end of turn>
    <prompt> Bad:\\n<worse>\\n\\nGood:\\n<better><end of turn>

CoH's loss counts the responses' tokens, never the feedback's. Here a chain is trained as two segments, each one
(prompt, response) group of the ordinary data path: the first response after the prompt and the first feedback,
then the second response after the prompt, the first feedback, the first response and the second feedback. The
feedback thus only ever sits in the prompt, and each response is a target ending with the end-of-turn token, as
every response this project trains (in CoH's chain the first response runs on into the second feedback instead).
So the model learns to answer well after the positive feedback, badly after the negative one, and to stop at the
end of its answer, which is how it is served.

CoH's two regularisers (its section 2):
- Shortcut. "We randomly mask between 0% and 5% of past tokens during training", after forgetful causal masking
  (Liu et al. 2022, arXiv 2210.13432), so that the model cannot copy the earlier response of the chain. Here the
  second segment's context loses a share, drawn uniformly from [0, training.coh_past_mask_max], of the earlier
  response's tokens (seeded per segment): they are left out of the prompt ids, so no later token attends to them.
  Unlike an attention mask, the positions after them close up by the tokens left out.
- Overfitting. L = E_F[−log p(x)] + λ E_P[−log p(x)] (its eq. 3), P the pre-training data. There is no
  pre-training corpus offline; the closest text the project holds is its own answers, so the term is plain SFT on
  each prompt's best-rated response without feedback, λ = training.coh_pretrain_weight (0.01, CoH's released
  code). The segments carry their role in the rating slot (`HINDSIGHT_ROLE`, `PRETRAIN_ROLE`), which the CoH loss
  (losses.coh_loss) reads; CoH trains on no rating.

Serving. CoH conditions the model on the positive feedback at inference. The CoH checkpoint's saved chat template
appends that feedback after the generation prompt, so every consumer that renders prompts through the checkpoint's
tokenizer (the `hf` backend, hence the HH and HH-A answers) hears it without knowing about CoH. lm-eval scores
multiple-choice tasks on the raw task text (the harness does not apply chat templates), so TruthfulQA, ETHICS,
Moral Stories and MIC see the CoH checkpoint unconditioned, like every other checkpoint. A base model without a chat
template is served in the Alpaca format, which no tokenizer setting changes: its CoH checkpoint is saved
unconditioned, with a warning.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alignment_pipeline.llm.prompt_format import Prompt
from alignment_pipeline.training.config import TrainingConfig
from alignment_pipeline.training.data import PromptGroup

log = logging.getLogger(__name__)

_PROBE = [{"role": "user", "content": "Is the template unchanged?"}]

HINDSIGHT_ROLE = 1.0  # rating slot of a hindsight segment's response: the CoH term
PRETRAIN_ROLE = 0.0  # rating slot of a pretraining group's response: the λ-weighted term


def feedback_prefix(feedback: str) -> str:
    """The text a feedback phrase stands as before a response: the phrase on its own line."""
    return f"{feedback.strip()}\n"


@dataclass(frozen=True)
class HindsightSegment(PromptGroup):
    """A prompt group whose prompt runs on past the start of the reply: the hindsight chain so far. `past` is the
    character span of the chain's earlier response inside `prefix` ((0, 0) in a chain's first segment), of which
    a share up to `past_mask_max` of the tokens is left out of the context, drawn by a generator seeded with
    `seed` and the segment's key."""

    prefix: str = ""
    past: tuple[int, int] = (0, 0)
    past_mask_max: float = 0.0
    seed: int = 0

    @property
    def prompt(self) -> Prompt:
        return Prompt(self.instruction, self.input, prefix=self.prefix)

    def context_ids(self, tokenizer, prompt_text: str, ids: list[int]) -> list[int]:
        start, end = self.past
        if end <= start or self.past_mask_max <= 0:
            return ids
        if not prompt_text.endswith(self.prefix):
            raise ValueError(f"{self.key}: the rendered prompt does not end with the hindsight chain")
        offset = len(prompt_text) - len(self.prefix)
        span = token_span(tokenizer, prompt_text, ids, offset + start, offset + end)
        dropped = masked_positions(span, self.past_mask_max, random.Random(f"{self.seed}:{self.key}"))
        return [t for i, t in enumerate(ids) if i not in dropped]


def token_span(tokenizer, text: str, ids: list[int], start: int, end: int) -> range:
    """The positions of `ids` (the tokens of `text`) that lie within text[start:end]: those that tokenising the
    text up to `start`, and up to `end`, shares with `ids`. A token merged across either boundary stays out."""
    def shared(prefix: str) -> int:
        head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        n = 0
        while n < min(len(head), len(ids)) and head[n] == ids[n]:
            n += 1
        return n

    first, last = shared(text[:start]), shared(text[:end])
    return range(first, max(first, last))


def masked_positions(span: range, max_share: float, rng: random.Random) -> set[int]:
    """A share drawn uniformly from [0, max_share] of the positions in `span` (rounded), sampled without
    replacement: forgetful causal masking's ratio, drawn per sequence."""
    k = round(rng.uniform(0.0, max_share) * len(span))
    return set(rng.sample(list(span), k))


def feedback_pairs(config: TrainingConfig) -> list[tuple[str, str]]:
    """The (positive, negative) feedback pairs a chain is drawn from; the pair the checkpoint is served after first."""
    return [(config.coh_positive_feedback, config.coh_negative_feedback), *config.coh_feedback_templates]


def hindsight_groups(pairs: list[PromptGroup], templates: Sequence[tuple[str, str]], *, seed: int = 0,
                     past_mask_max: float = 0.0) -> list[PromptGroup]:
    """The CoH training segments (see the module docstring), four per (better, worse) pair: `pairs` as
    `objectives.preference_pairs` makes them, the higher-rated response first. Each chain (a pair in one order)
    takes one of `templates` by a generator seeded with `seed` and its key; every response is a CoH target
    (`HINDSIGHT_ROLE`)."""
    if not templates:
        raise ValueError("Chain-of-Hindsight needs at least one (positive, negative) feedback pair")
    out: list[PromptGroup] = []
    for pair in pairs:
        if len(pair.responses) != 2 or not pair.ratings[0] > pair.ratings[1]:
            raise ValueError(f"{pair.key}: a hindsight pair is (better, worse), rated strictly lower second")
        better, worse = (r.strip() for r in pair.responses)
        for order in ("pos_first", "neg_first"):
            key = f"{pair.key}:{order}"
            positive, negative = random.Random(f"{seed}:{key}").choice(list(templates))
            pos, neg = feedback_prefix(positive), feedback_prefix(negative)
            (f1, first), (f2, second) = ((pos, better), (neg, worse)) if order == "pos_first" else \
                ((neg, worse), (pos, better))
            segments = ((f1, first, (0, 0)), (f"{f1}{first}\n\n{f2}", second, (len(f1), len(f1) + len(first))))
            for n, (prefix, response, past) in enumerate(segments, start=1):
                out.append(HindsightSegment(pair.instruction, pair.input, [response], [HINDSIGHT_ROLE],
                                            f"{key}:{n}", pair.batches, prefix=prefix, past=past,
                                            past_mask_max=past_mask_max, seed=seed))
    return out


def pretraining_groups(groups: Sequence[PromptGroup]) -> list[PromptGroup]:
    """The pretraining term's data: each group's best-rated response after its plain prompt (`PRETRAIN_ROLE`)."""
    out = []
    for g in groups:
        best = g.best_index()
        out.append(PromptGroup(g.instruction, g.input, [g.responses[best]], [PRETRAIN_ROLE], f"{g.key}:pretrain",
                               g.batches))
    return out


def coh_training_groups(groups: Sequence[PromptGroup], pairs: list[PromptGroup],
                        config: TrainingConfig) -> list[PromptGroup]:
    """What CoH trains on: the hindsight segments of `pairs`, then (λ > 0) the pretraining groups of `groups`.
    No pair, no training: the pretraining term only regularises the hindsight one."""
    segments = hindsight_groups(pairs, feedback_pairs(config), seed=config.seed,
                                past_mask_max=config.coh_past_mask_max)
    if not segments or config.coh_pretrain_weight == 0:
        return segments
    return segments + pretraining_groups(groups)


def conditioned_chat_template(tokenizer, feedback: str) -> str:
    """`tokenizer`'s chat template with `feedback_prefix(feedback)` written after the generation prompt (and
    nowhere else). Checked by rendering: unchanged without a generation prompt, extended by exactly the prefix
    with one."""
    template = tokenizer.chat_template
    if not isinstance(template, str) or not template:
        raise ValueError("the tokenizer has no single chat template to extend")
    prefix = feedback_prefix(feedback)
    # json.dumps writes a double-quoted literal with its escapes, which Jinja reads back as the same string.
    conditioned = template + "{% if add_generation_prompt %}{{ " + json.dumps(prefix) + " }}{% endif %}"
    before = [tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=g) for g in (False, True)]
    after = [tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=g,
                                           chat_template=conditioned) for g in (False, True)]
    if after != [before[0], before[1] + prefix]:
        raise ValueError(f"appending {prefix!r} to the chat template changed more than the generation prompt: "
                         f"{after!r} from {before!r}")
    return conditioned


def condition_saved_tokenizer(directory: str | Path, feedback: str) -> bool:
    """Rewrite the tokenizer saved in `directory` so its chat template ends every generation prompt with the
    feedback. False (and a warning) when it has no chat template: such a model is served in the Alpaca format."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory))
    if not getattr(tokenizer, "chat_template", None):
        log.warning("%s: the tokenizer has no chat template, so the model is served in the Alpaca format and the "
                    "Chain-of-Hindsight checkpoint is not conditioned on %r at inference", directory, feedback)
        return False
    tokenizer.chat_template = conditioned_chat_template(tokenizer, feedback)
    tokenizer.save_pretrained(str(directory))
    return True
