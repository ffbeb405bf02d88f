"""A random-init tiny Llama with the byte-level ByT5 tokenizer, built offline and saved like any checkpoint,
so every consumer loads it through the real `from_pretrained` path."""

from __future__ import annotations

from pathlib import Path


def build_tiny_model(out_dir: str | Path, *, hidden: int = 64, layers: int = 2, heads: int = 4,
                     max_positions: int = 2048, seed: int = 0) -> Path:
    """Write a tiny causal LM and its tokenizer to `out_dir` (idempotent: an existing build is kept)."""
    out = Path(out_dir)
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    # Imported here: loading transformers takes seconds and most callers only resolve paths.
    import torch
    from transformers import ByT5Tokenizer, LlamaConfig, LlamaForCausalLM

    out.mkdir(parents=True, exist_ok=True)
    tokenizer = ByT5Tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=max_positions, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
