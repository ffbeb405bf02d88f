"""What a checkpoint consumed, per sample type: prompts, responses and the preference comparisons its objective
draws from them (`data/...`), and of those what its optimizer steps reached (`trained/...`: under a step budget
a stage may stop before it has seen every prompt). Methods are compared on the same samples only where these
figures say so."""

from __future__ import annotations

from alignment_pipeline.training.control import CONTROL_TYPE
from alignment_pipeline.training.data import SAMPLE_TYPES, PromptGroup
from alignment_pipeline.training.objectives import preference_pairs

#: objectives that compare every differently rated pair of a prompt's responses (RRHF's ranking loss, SPPO's win
#: rates); the Stable Alignment hinge and Chain-of-Hindsight compare the best against each lower one
_ALL_PAIRS = ("rrhf", "sppo")
_BEST_VS_LOWER = ("stable_alignment", "coh")


def comparisons(group: PromptGroup, objective: str, dpo_pairs: str = "best_vs_rest") -> int:
    """Preference comparisons `objective` draws from one group (0 for SFT and online RL, which rank nothing)."""
    r = group.ratings
    if objective in _ALL_PAIRS:
        return sum(1 for i in range(len(r)) for j in range(i + 1, len(r)) if r[i] != r[j])
    if objective in _BEST_VS_LOWER:
        return sum(1 for x in r if x < max(r))
    if objective == "dpo":
        return len(preference_pairs([group], dpo_pairs))
    return 0


def sample_type(group: PromptGroup) -> str:
    """A group's sample type, from its key (`<type>:<prompt_key>`, training/data.py load_groups)."""
    head = group.key.split(":", 1)[0]
    return head if head in (*SAMPLE_TYPES, CONTROL_TYPE) else "other"


def consumption(groups: list[PromptGroup], objective: str, dpo_pairs: str = "best_vs_rest") -> dict[str, int]:
    """`data/<type>/prompts|responses|pairs` for every sample type (zeros included, so a missing type shows)."""
    out: dict[str, int] = {}
    for t in (*SAMPLE_TYPES, CONTROL_TYPE, "other"):
        mine = [g for g in groups if sample_type(g) == t]
        if t in (CONTROL_TYPE, "other") and not mine:
            continue
        out[f"data/{t}/prompts"] = len(mine)
        out[f"data/{t}/responses"] = sum(len(g.responses) for g in mine)
        out[f"data/{t}/pairs"] = sum(comparisons(g, objective, dpo_pairs) for g in mine)
    return out


def reached(groups: list[PromptGroup], units: list[PromptGroup], consumed: list[list], objective: str,
            dpo_pairs: str = "best_vs_rest") -> dict[str, int]:
    """`trained/<type>/prompts|responses|pairs`: the part of `consumption(groups, ...)` that the training steps
    reached. `units` is the list the trainer indexed (objectives.training_groups: DPO's pairs, CoH's chains, or
    the groups themselves), `consumed` its batch log ([step, epoch, batch, [unit indices]], trainer.py). A group
    counts as reached when any of its units is; DPO counts the pairs themselves, as it trains on them."""
    hit = {i for entry in consumed for i in entry[3]}
    keys = {units[i].key for i in hit}
    reached_groups = [g for g in groups if g.key in keys or any(k.startswith(f"{g.key}:") for k in keys)]
    out: dict[str, int] = {}
    for t in (*SAMPLE_TYPES, CONTROL_TYPE, "other"):
        mine = [g for g in reached_groups if sample_type(g) == t]
        if t in (CONTROL_TYPE, "other") and not any(sample_type(g) == t for g in groups):
            continue
        out[f"trained/{t}/prompts"] = len(mine)
        if objective == "dpo":
            pairs = [units[i] for i in hit if sample_type(units[i]) == t]
            out[f"trained/{t}/responses"] = len({(p.instruction, p.input, r) for p in pairs for r in p.responses})
            out[f"trained/{t}/pairs"] = len(pairs)
        else:
            out[f"trained/{t}/responses"] = sum(len(g.responses) for g in mine)
            out[f"trained/{t}/pairs"] = sum(comparisons(g, objective, dpo_pairs) for g in mine)
    return out
