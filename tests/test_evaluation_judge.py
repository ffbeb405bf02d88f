"""The judge as a researcher uses it: the parsed integer is the score (strict, re-asked), the log-prob expectation
an extra column; pairwise wins against base in both orders, ties half, identical answers not asked."""

import math

import pytest

from alignment_pipeline.evaluation.hh_data import HHItem
from alignment_pipeline.evaluation.judge import (
    PAIR_CANDIDATES,
    SCORE_CANDIDATES,
    expected_score,
    pairwise_wins,
    parse_score,
    score_answers,
    summarise,
)
from alignment_pipeline.llm.scripted import ScriptedLLM


def _items(n):
    return [HHItem("f", k, f"harmful request {k}", f"harmful request {k}") for k in range(n)]


def test_parse_score_is_strict():
    assert parse_score("Score: 7\nReason: fine") == 7 and parse_score("Score:3") == 3
    for bad in ("Score: 0", "Score: 11", "Score: 7.5", "I would say 7", "Score: 4\nScore: 9", "Score: seven"):
        assert parse_score(bad) is None


def test_expected_score_renormalises_over_the_ten():
    assert expected_score([0.0 if s == 8 else -math.inf for s in range(1, 11)]) == (8.0, 8)
    assert expected_score([-3.0 if s in (2, 9) else -math.inf for s in range(1, 11)])[0] == pytest.approx(5.5)
    assert expected_score([-math.inf] * 10) is None


def test_parsed_integer_is_the_score_and_expectation_a_column():
    want = SCORE_CANDIDATES[8]
    judge = ScriptedLLM(responder=lambda p: " 3\nReason: helps" if "request 0" in p else "no idea",
                        scorer=lambda p, c: [0.0 if x == want else -50.0 for x in c])
    out = score_answers(judge, _items(2), ["a", "b"], max_reasks=1)
    assert (out[0].score, out[0].method, out[0].judge_calls) == (3.0, "parsed", 1)
    assert out[0].score_expected == pytest.approx(9.0, abs=1e-6)  # the log-probs say 9, the reply says 3
    assert out[1].score is None and out[1].judge_calls == 2 and "no valid 'Score: N'" in out[1].null_reason
    rows = {r.metric: r for r in summarise("hh", out)}
    assert rows["score"].n == 1 and rows["unscored"].value == 1.0 and rows["score_expected"].n == 2


def test_pairwise_asks_both_orders_and_counts_splits_half():
    def scorer(prompt, candidates):
        assert tuple(candidates) == PAIR_CANDIDATES
        first = prompt.split("Reply A:\n")[1].split("\n")[0]
        if "biased" in prompt:  # always prefers position A: the two orders disagree
            return [0.0, -5.0]
        return [0.0, -5.0] if first.startswith("good") else [-5.0, 0.0]

    judge = ScriptedLLM(scorer=scorer)
    items = _items(4)
    items[3] = HHItem("f", 3, "biased request", "biased request")
    wins = pairwise_wins(judge, items, ["good answer", "bad answer", "same", "x"], ["bad base", "good base", "same",
                                                                                     "y"])
    assert wins == [1.0, 0.0, 0.5, 0.5]
    assert sum("Reply A:\nsame" in p for p in judge.prompts) == 0  # identical answers are not asked
    assert pairwise_wins(judge, items[:1], ["a"], [None]) == [None]


def test_local_judge_reply_and_expectation_come_from_one_pass(tmp_path):
    """A local judge's first reply is its greedy generation and its expectation its own log-probs of 1..10."""
    from alignment_pipeline.evaluation.judge import judge_prompt
    from alignment_pipeline.llm.base import GenerationParams
    from alignment_pipeline.llm.hf import HFBackend
    from alignment_pipeline.llm.tiny import build_tiny_model

    judge = HFBackend(build_tiny_model(tmp_path / "tiny"), device="cpu", model_name="tiny-judge")
    items, answers = _items(2), ["I won't help with that.", "Sure, here is how."]
    out = score_answers(judge, items, answers, max_reasks=0, max_new_tokens=4)
    prompts = [judge_prompt(i.request, a) for i, a in zip(items, answers, strict=True)]
    replies = judge.generate(prompts, GenerationParams(max_new_tokens=4, temperature=0.0))
    lps = judge.score_continuations(prompts, SCORE_CANDIDATES)
    for j, reply, lp in zip(out, replies, lps, strict=True):
        assert j.score == (parse_score("Score:" + reply.text) or None)
        assert j.score_expected == pytest.approx(expected_score(lp)[0], abs=1e-3)
        assert j.judge_calls == 1
    judge.close()
