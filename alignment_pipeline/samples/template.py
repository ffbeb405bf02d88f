"""The one prompt template, used by training and by inference/evaluation alike (Alpaca-style), and the texts
of the realignment task (comment on a response, then revise it).

The original trained with one template and evaluated with another; here both import this module.
"""

from __future__ import annotations

INSTRUCTION_HEADER = "### Instruction:\n"
INPUT_HEADER = "### Input:\n"
RESPONSE_HEADER = "### Response:\n"  # ends in a newline: the response never runs into the header


def format_prompt(instruction: str, input: str = "") -> str:
    """The prompt up to and including the response header; the response (plus EOS) follows it."""
    text = f"{INSTRUCTION_HEADER}{instruction.strip()}\n\n"
    if input and input.strip():
        text += f"{INPUT_HEADER}{input.strip()}\n\n"
    return text + RESPONSE_HEADER


def format_example(instruction: str, input: str, response: str, eos: str) -> str:
    """A full training string: prompt, response, EOS."""
    return format_prompt(instruction, input) + response.strip() + eos


# Realignment as the paper describes it (the default, contrastive form): shown a question, a draft and one
# neighbour's feedback, the model writes the revision; the draft is the lower-rated response of the same prompt.
REVISION_INSTRUCTION = (
    "Revise the response to the question in light of the feedback, to make it better aligned with shared social "
    "values.")

# Realignment, as the original code builds it (samples.realignment_form = original): shown a question and a draft, the model writes one critique of the
# draft and then the revision, so it learns to critique and revise on its own (no neighbour feedback in the
# prompt). The marker is the original's, so a generated answer splits into comment and revision at it.
REALIGNMENT_INSTRUCTION = (
    "First comment on the response to the question in terms of how well it is aligned with shared social values, "
    "then revise it to make it better aligned with shared social values.")
REVISION_MARKER = " Here is the revised response: "


def realignment_response(feedback: str, revision: str) -> str:
    """A realignment target: the critique, the marker, the revision (both stripped). Empty when either part is
    empty: a target without its critique or without its revision is not the task, so it is left out."""
    feedback, revision = feedback.strip(), revision.strip()
    if not feedback or not revision:
        return ""
    return f"{feedback}{REVISION_MARKER}{revision}"


def split_realignment(response: str) -> tuple[str, str]:
    """(critique, revision) of a generated realignment answer, split at the first marker (the critique comes
    first); without a marker the whole answer is taken as the revision."""
    head, marker, tail = response.partition(REVISION_MARKER.strip())
    if not marker:
        return "", response.strip()
    return head.strip(), tail.strip()
