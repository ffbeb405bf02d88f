"""Chain-of-Hindsight (Liu et al., arXiv 2302.02676): training sequences of responses preceded by hindsight feedback,
and the chat template that serves the trained model after its positive feedback.

Data. Each prompt's best response is paired with every response rated strictly lower (the DPO baseline's pairs), and
each pair becomes a chain in both orders, as CoH presents them:

    <prompt> A helpful answer:\\n<better>\\n\\nAn unhelpful answer:\\n<worse><end of turn>
    <prompt> An unhelpful answer:\\n<worse>\\n\\nA helpful answer:\\n<better><end of turn>

CoH's loss counts the responses' tokens, never the feedback's. Here a chain is trained as two segments, each one
(prompt, response) group of the ordinary data path: the first response after the prompt and the first feedback,
then the second response after the prompt, the first feedback, the first response and the second feedback. The
feedback thus only ever sits in the prompt, and each response is a target ending with the end-of-turn token, as
every response this project trains (in CoH's chain the first response runs on into the second feedback instead).
So the model learns to answer well after the positive feedback, badly after the negative one, and to stop at the
end of its answer, which is how it is served.

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
from dataclasses import dataclass
from pathlib import Path

from alignment_pipeline.llm.prompt_format import Prompt
from alignment_pipeline.training.data import PromptGroup

log = logging.getLogger(__name__)

_PROBE = [{"role": "user", "content": "Is the template unchanged?"}]


def feedback_prefix(feedback: str) -> str:
    """The text a feedback phrase stands as before a response: the phrase on its own line."""
    return f"{feedback.strip()}\n"


@dataclass(frozen=True)
class HindsightSegment(PromptGroup):
    """A prompt group whose prompt runs on past the start of the reply: the hindsight chain so far."""

    prefix: str = ""

    @property
    def prompt(self) -> Prompt:
        return Prompt(self.instruction, self.input, prefix=self.prefix)


def hindsight_groups(pairs: list[PromptGroup], positive: str, negative: str) -> list[PromptGroup]:
    """The CoH training segments (see the module docstring), four per (better, worse) pair: `pairs` as
    `objectives.preference_pairs` makes them, the higher-rated response first."""
    pos, neg = feedback_prefix(positive), feedback_prefix(negative)
    out: list[PromptGroup] = []
    for pair in pairs:
        if len(pair.responses) != 2 or not pair.ratings[0] > pair.ratings[1]:
            raise ValueError(f"{pair.key}: a hindsight pair is (better, worse), rated strictly lower second")
        (better, worse), (r_better, r_worse) = pair.responses, pair.ratings
        for order, chain in (("pos_first", ((pos, better.strip(), r_better), (neg, worse.strip(), r_worse))),
                             ("neg_first", ((neg, worse.strip(), r_worse), (pos, better.strip(), r_better)))):
            (f1, first, r1), (f2, second, r2) = chain
            segments = ((f1, first, r1), (f"{f1}{first}\n\n{f2}", second, r2))
            for n, (prefix, response, rating) in enumerate(segments, start=1):
                out.append(HindsightSegment(pair.instruction, pair.input, [response], [rating],
                                            f"{pair.key}:{order}:{n}", pair.batches, prefix=prefix))
    return out


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
