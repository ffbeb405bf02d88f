"""The one place that decides how a request is written for a given model: its tokenizer's chat template when
it has one, else the project's Alpaca template (samples/template.py).

Requests are `Prompt`s (role, task, context, optional start of the reply), never pre-rendered text, so the
sandbox, the judge, evaluation and training all say *what* they ask and each model hears it in its own format.
Samples are stored without any template; training renders them with the format of the model being trained,
which is the format that model is later served with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from alignment_pipeline.samples.template import (
    INPUT_HEADER,
    INSTRUCTION_HEADER,
    RESPONSE_HEADER,
    format_prompt,
)


@dataclass(frozen=True)
class Prompt:
    instruction: str
    input: str = ""
    system: str = ""  # the role (society member, observer, judge); empty: the model's default
    prefix: str = ""  # the start of the reply, which the model continues (e.g. "Rating:")

    @property
    def user(self) -> str:
        """Instruction and context as one user message."""
        body = self.instruction.strip()
        return f"{body}\n\n{self.input.strip()}" if self.input.strip() else body


# Text a model writes past the end of its answer: the next template header (Alpaca models run on into
# invented turns) or a chat turn marker that was not a special token.
_ALPACA_STOPS = (INSTRUCTION_HEADER.strip(), INPUT_HEADER.strip(), RESPONSE_HEADER.strip())
_TURN_MARKERS = re.compile(r"<\|im_(?:start|end)\|>|<\|(?:eot_id|start_header_id|end_header_id|endoftext)\|>"
                           r"|</s>|<end_of_turn>|<start_of_turn>")


def cut_at_stop(text: str) -> str:
    """The answer part of a generated text: up to the first template header or chat turn marker."""
    end = len(text)
    for marker in _ALPACA_STOPS:
        found = text.find(marker)
        if found != -1:
            end = min(end, found)
    match = _TURN_MARKERS.search(text)
    if match:
        end = min(end, match.start())
    return text[:end]


class PromptFormat:
    """Alpaca: `### Instruction:` (system + instruction), `### Input:`, `### Response:`, then the reply."""

    name = "alpaca"
    chat = False

    def render(self, prompt: Prompt) -> str:
        instruction = f"{prompt.system.strip()}\n{prompt.instruction.strip()}" if prompt.system.strip() \
            else prompt.instruction
        return format_prompt(instruction, prompt.input) + prompt.prefix

    def end_of_turn_ids(self, tokenizer) -> list[int]:
        """Tokens that close a trained response: EOS."""
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token_id; responses must end with EOS")
        return [tokenizer.eos_token_id]


class ChatTemplateFormat(PromptFormat):
    """The tokenizer's own chat template: a system message (when the role gives one), the user message, then
    the assistant turn, continued from `prefix`."""

    name = "chat_template"
    chat = True

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def messages(self, prompt: Prompt) -> list[dict]:
        system = [{"role": "system", "content": prompt.system.strip()}] if prompt.system.strip() else []
        return [*system, {"role": "user", "content": prompt.user}]

    def render(self, prompt: Prompt) -> str:
        text = self.tokenizer.apply_chat_template(self.messages(prompt), tokenize=False, add_generation_prompt=True)
        return text + prompt.prefix

    def end_of_turn_ids(self, tokenizer) -> list[int]:
        """The special token the template writes right after an assistant message (e.g. `<|im_end|>`,
        `<|eot_id|>`), else EOS: generation stops there, so training teaches the model to end with it."""
        marker = "\x00ANSWER\x00"
        text = tokenizer.apply_chat_template([{"role": "user", "content": "q"},
                                              {"role": "assistant", "content": marker}], tokenize=False)
        after = text[text.index(marker) + len(marker):]
        ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
        special = set(tokenizer.all_special_ids)
        if ids and ids[0] in special:
            return [ids[0]]
        return PromptFormat.end_of_turn_ids(self, tokenizer)


ALPACA = PromptFormat()


def prompt_format(tokenizer) -> PromptFormat:
    """The format of the model behind `tokenizer`: its chat template if it has one, else Alpaca."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return ChatTemplateFormat(tokenizer)
    return ALPACA
