"""Trainer correctness and hot-path checks: prompt cuts decided by the responses trained, SentencePiece response
boundaries, the model's logit scalings in the chunked head, MFU accounting, dropout, flex attention, host syncs
in the losses and the peak-FLOPs table."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

from alignment_pipeline.samples.template import format_prompt
from alignment_pipeline.training.data import PromptGroup, TokenizedGroup, limit_responses, tokenize_group
from alignment_pipeline.training.forward import pack_groups, response_logps

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GROUPS = [
    PromptGroup("Say hi to the user", "", ["hello there friend", "no", "what is this about, ok?"], [5, 3, 1]),
    PromptGroup("A much longer instruction with more words in it", "and an input", ["yes", "x"], [1, 2]),
]


def _llama(vocab: int = 384, attn: str = "sdpa", **extra) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=1, bos_token_id=None, attn_implementation=attn, **extra)
    return LlamaForCausalLM(config).float()


def test_a_prompt_cut_follows_the_responses_trained():
    tok = ByT5Tokenizer()
    instruction = "Please explain, step by step and with care, why the sky looks blue on a clear day?"
    prompt_len = len(tok(format_prompt(instruction), add_special_tokens=False)["input_ids"])
    group = PromptGroup(instruction, "", ["Rayleigh scattering.", "Because of air.", "z" * 600], [7, 5, 1])
    max_length = 200
    assert prompt_len > max_length // 2  # the prompt does not fit beside the long response
    tg = tokenize_group(tok, group, 0, max_length=max_length, min_prompt_tokens=16)
    # One over-long response does not take every response's question: the prompt keeps at least half the window
    # (its end intact), and that response alone is cut on its right.
    assert len(tg.prompt_ids) >= max_length // 2
    assert tok.decode(tg.prompt_ids).endswith("### Response:\n")
    assert tok.decode(tg.response_ids[0][:-1]) == "Rayleigh scattering."
    assert len(tg.prompt_ids) + len(tg.response_ids[2]) == max_length
    # When the sample of responses trained together leaves the long one out, the prompt is whole again.
    for epoch in range(20):
        limited = limit_responses(tg, 2, seed=0, epoch=epoch)
        if 1 not in limited.ratings:
            break
    else:
        raise AssertionError("no epoch left the long response out")
    assert len(limited.prompt_ids) == prompt_len
    assert [tok.decode(r[:-1]) for r in limited.response_ids] == ["Rayleigh scattering.", "Because of air."]


def _sentencepiece_llama_tokenizer():
    """A Llama tokenizer with SentencePiece's legacy behaviour (Metaspace, a dummy "▁" in front of a text),
    trained here on a few lines."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    lines = ["Below is an instruction that describes a task. Write a response that appropriately completes "
             "the request.", "Instruction: Say hello to the user", "Response: Hello there friend", "Hello world"]
    # "\n" is in the alphabet but in no line, so no piece merges across it (as Llama's byte-fallback newline).
    backend.train_from_iterator(lines * 20, trainers.BpeTrainer(vocab_size=200, initial_alphabet=["\n", "#"],
                                                                special_tokens=["<unk>", "<s>", "</s>"]))
    return LlamaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                              legacy=True)


def test_d_sentencepiece_response_has_no_dummy_prefix():
    tok = _sentencepiece_llama_tokenizer()
    assert tok.convert_ids_to_tokens(tok("Hello", add_special_tokens=False)["input_ids"])[0].startswith("▁")
    group = PromptGroup("Say hello to the user", "", ["Hello there friend"], [5])
    tg = tokenize_group(tok, group, 0, max_length=256)
    prompt_text = format_prompt("Say hello to the user")
    running = tok(prompt_text + "Hello there friend", add_special_tokens=False)["input_ids"]
    body = tok(prompt_text, add_special_tokens=False)["input_ids"]
    assert running[:len(body)] == body
    response = tg.response_ids[0][:-1]  # without the end-of-turn token
    assert tg.prompt_ids[-len(body):] == body
    assert response == running[len(body):]  # ids(prompt) + ids(response) is the running text
    assert not tok.convert_ids_to_tokens(response)[0].startswith("▁")


def _assert_head_matches_forward(model):
    g = TokenizedGroup(0, [5, 9, 17, 3, 8], [[11, 4, 22, 7]], [1.0])
    batch = pack_groups([g], pad_id=0)
    with torch.no_grad():
        ours = response_logps(model, batch, chunk_size=3).token_logps[0, 0]
        full = model(input_ids=torch.tensor([g.prompt_ids + g.response_ids[0]])).logits.float().log_softmax(-1)[0]
    p, r = len(g.prompt_ids), g.response_ids[0]
    want = full[p - 1:p - 1 + len(r)].gather(-1, torch.tensor(r)[:, None]).squeeze(-1)
    torch.testing.assert_close(ours, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["granite", "cohere", "gemma2"])
def test_e_chunked_head_applies_the_models_logit_scaling(kind):
    from transformers import (
        CohereConfig,
        CohereForCausalLM,
        Gemma2Config,
        Gemma2ForCausalLM,
        GraniteConfig,
        GraniteForCausalLM,
    )

    torch.manual_seed(0)
    shape = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, attn_implementation="sdpa")
    if kind == "granite":
        model = GraniteForCausalLM(GraniteConfig(**shape, logits_scaling=4.0))
    elif kind == "cohere":
        model = CohereForCausalLM(CohereConfig(**shape, logit_scale=0.25))
    else:
        # Gemma 2 has no SDPA path in transformers; its eager attention takes the additive mask.
        model = Gemma2ForCausalLM(Gemma2Config(**{**shape, "attn_implementation": "eager"}, head_dim=8,
                                               final_logit_softcapping=0.5))
    _assert_head_matches_forward(model.float().eval())


def test_f_mfu_counts_tied_weights_once_and_frozen_weights_4n():
    from peft import LoraConfig, get_peft_model

    from alignment_pipeline.training.runtime import flop_params, training_flops

    model = _llama(tie_word_embeddings=True)
    embed = model.get_input_embeddings().weight
    assert model.get_output_embeddings().weight is embed
    unique = sum(p.numel() for p in model.parameters())
    body, head = flop_params(model)
    assert body.trainable == unique - embed.numel() and body.frozen == 0
    assert head.trainable == embed.numel() and head.frozen == 0
    assert training_flops(body, head, 100, 10) == 6.0 * (body.trainable * 100 + head.trainable * 10)

    lora = get_peft_model(_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                               task_type="CAUSAL_LM"))
    adapters = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    inner = lora.get_base_model()
    frozen_body = (sum(p.numel() for p in inner.parameters() if not p.requires_grad)
                   - inner.get_input_embeddings().weight.numel() - inner.get_output_embeddings().weight.numel())
    body, head = flop_params(lora)
    assert body == (adapters, frozen_body)
    assert head == (0, inner.get_output_embeddings().weight.numel())
    want = (6.0 * adapters + 4.0 * frozen_body) * 100 + 4.0 * head.frozen * 10
    assert training_flops(body, head, 100, 10) == want


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_g_policy_dropout_off_so_step_zero_matches_reference(tmp_path, kind):
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignment_pipeline.training.config import TrainingConfig
    from alignment_pipeline.training.data import tokenize_groups
    from alignment_pipeline.training.reference import compute_reference_logps
    from alignment_pipeline.training.runtime import resolve_runtime
    from alignment_pipeline.training.trainer import load_model

    tok = ByT5Tokenizer()
    if kind == "llama":
        model = _llama(vocab=len(tok), attention_dropout=0.3)
    else:
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=256,
                                           resid_pdrop=0.3, embd_pdrop=0.3, attn_pdrop=0.3))
    model.save_pretrained(tmp_path / kind)
    tgs = tokenize_groups(tok, GROUPS, max_length=64)
    batch = pack_groups(tgs, tok.pad_token_id)
    runtime = resolve_runtime("cpu", "fp32")

    def step_zero_gap(config: TrainingConfig) -> float:
        policy = load_model(tmp_path / kind, config, runtime)
        reference = compute_reference_logps(policy, tgs, pad_id=tok.pad_token_id, device=runtime.device,
                                            batch_size=4)
        policy.train()  # as the trainer trains it
        torch.manual_seed(1)
        with torch.no_grad():
            lp = response_logps(policy, batch)
        got = torch.where(lp.response_mask, lp.logp_sum, float("nan"))
        return (got - reference).nan_to_num().abs().max().item()

    assert step_zero_gap(TrainingConfig()) < 1e-5  # the default: off, the log-ratio starts at zero
    assert step_zero_gap(TrainingConfig(disable_dropout=False)) > 1e-3  # kept on when asked


def test_6a_flex_attention_equals_sdpa(monkeypatch):
    import transformers.integrations.flex_attention as hf_flex
    from torch.nn.attention.flex_attention import flex_attention

    from alignment_pipeline.training.data import tokenize_groups

    # transformers compiles flex attention on first use (a minute on a small CPU); the math is the same uncompiled.
    monkeypatch.setattr(hf_flex, "compile_friendly_flex_attention",
                        lambda q, k, v, training=False, **kw: flex_attention(q, k, v, **kw))

    tok = ByT5Tokenizer()
    tgs = tokenize_groups(tok, GROUPS, max_length=64)
    batch = pack_groups(tgs, tok.pad_token_id)
    sdpa = _llama(vocab=len(tok))
    flex = _llama(vocab=len(tok), attn="flex_attention")
    flex.load_state_dict(sdpa.state_dict())
    assert flex.config._attn_implementation == "flex_attention"
    with torch.no_grad():  # torch's flex attention has no backward on CPU
        want = response_logps(sdpa, batch)
        got = response_logps(flex, batch)
    torch.testing.assert_close(got.token_logps, want.token_logps, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.token_mask, want.token_mask)
    # Selected as training.attn_implementation: flex on CUDA; CPU falls back to SDPA.
    from alignment_pipeline.training.forward import model_attn_implementation

    assert model_attn_implementation("flex", "cuda") == "flex_attention"
    assert model_attn_implementation("flex", "cpu") == "sdpa"
    assert model_attn_implementation("eager", "cpu") == "eager"


def test_6b_losses_never_read_the_device():
    """On a device with no host copy (meta), any `.item()`/`.tolist()`/`bool()` inside a loss would raise:
    the losses leave their components on the device until they are read."""
    from alignment_pipeline.training.losses import dpo_loss, sft_loss, sppo_loss, stable_alignment_loss

    meta = dict(device="meta")
    nll, ratings = torch.rand(3, 4, **meta), torch.rand(3, 4, **meta)
    mask = torch.ones(3, 4, dtype=torch.bool, **meta)
    outs = [stable_alignment_loss(nll, ratings, mask, margin=1.0, rating_scale=7.0, ratio=0.2),
            sft_loss(nll, mask), sppo_loss(nll, ratings, ratings, mask, eta=1.0),
            dpo_loss(*(torch.rand(3, **meta) for _ in range(4)))]
    assert all(o.loss.device.type == "meta" for o in outs)

    # On CPU the same losses read back every component in one transfer, checks included.
    from alignment_pipeline.training.losses import read_outputs

    x = torch.tensor([[1.0, 2.0]])
    cpu = [sft_loss(x, torch.tensor([[True, True]])), sft_loss(2 * x, torch.tensor([[True, False]]))]
    read_outputs(cpu)
    assert [o.metrics()["loss"] for o in cpu] == [1.5, 2.0] and cpu[1].extra == {"n_responses": 1.0}


@pytest.mark.parametrize("name,peak", [
    ("NVIDIA H100 80GB HBM3", 989.4), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H100 NVL", 835.0),
    ("NVIDIA H200", 989.4), ("NVIDIA H200 NVL", 835.0), ("NVIDIA GH200 480GB", 989.4),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100-SXM4-40GB", 312.0), ("NVIDIA A100-PCIE-40GB", 312.0),
    ("NVIDIA A100 80GB PCIe", 312.0), ("NVIDIA L40S", 362.0), ("NVIDIA L40", 181.0), ("NVIDIA A10", 125.0),
    ("NVIDIA L4", 121.0), ("NVIDIA GeForce RTX 4090", 165.2),
    ("NVIDIA A10G", None), ("NVIDIA GeForce RTX 4090 D", None), ("NVIDIA H100", None), ("Tesla T4", None),
])
def test_6c_peak_flops_by_exact_device_name(name, peak, caplog):
    from alignment_pipeline.training.runtime import peak_tflops_for

    with caplog.at_level(logging.WARNING):
        assert peak_tflops_for(name) == peak
    assert ("training.peak_tflops" in caplog.text) == (peak is None)
