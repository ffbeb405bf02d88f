"""HFBackend: a local transformers causal LM. Batched left-padded generation and exact continuation scoring."""

from __future__ import annotations

import gc
import inspect
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment_pipeline.devices import resolve_device, resolve_dtype
from alignment_pipeline.llm.base import Completion, GenerationParams, LLMBackend, PromptLike
from alignment_pipeline.llm.prompt_format import Prompt, cut_at_stop, prompt_format

logger = logging.getLogger("alignment_pipeline.llm")


class HFBackend(LLMBackend):
    """A causal LM loaded with `from_pretrained` from a local directory or hub id.

    Prompts are rendered in the model's own format (its chat template, else Alpaca; llm/prompt_format.py) and
    replies end at the end of the turn or the next template header. `generate` runs one `model.generate` call
    per chunk of `batch_size` prompts (left padding, prompts cut from the left to `max_input_tokens`). `score_continuations` returns exact summed log-probs of each
    candidate's tokens after the prompt."""

    supports_logprobs = True

    def __init__(self, model_name_or_path: str | Path, *, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 32, max_input_tokens: int = 2048, model_name: str | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_input_tokens < 1:
            raise ValueError(f"max_input_tokens must be >= 1, got {max_input_tokens}")
        self.model_name = model_name or str(model_name_or_path)
        self.batch_size = batch_size
        self.max_input_tokens = max_input_tokens
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        # Generation and the global torch seed are not safe to interleave across threads.
        self._lock = threading.Lock()

        started = time.perf_counter()
        tokenizer = AutoTokenizer.from_pretrained(str(model_name_or_path))
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise ValueError(f"tokenizer of {self.model_name} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer = tokenizer
        self.format = prompt_format(tokenizer)
        # Weights go straight to the target device, without a full copy in CPU memory first.
        model = AutoModelForCausalLM.from_pretrained(str(model_name_or_path), dtype=self.dtype,
                                                     device_map=str(self.device))
        model.eval()
        self.model = model
        # A chat template writes its own start tokens; plain text gets the tokenizer's BOS.
        self._prefix_ids = [] if self.format.chat else self._leading_special_ids()
        self._stop_ids = self._collect_stop_ids()
        # Architectures without `logits_to_keep` return full logits; they are sliced right after.
        self._accepts_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        logger.info("loaded %s on %s (%s) in %.1fs", self.model_name, self.device, str(self.dtype).split(".")[-1],
                    time.perf_counter() - started)

    def __repr__(self) -> str:
        return f"HFBackend(model_name={self.model_name!r}, device={str(self.device)!r}, dtype={self.dtype})"

    # -- tokenisation -----------------------------------------------------------------------------------

    def _leading_special_ids(self) -> list[int]:
        """The special tokens the tokenizer puts before text (a BOS). Those it puts after (ByT5's EOS) are
        left out: the model is to continue the prompt, not see it ended."""
        probe = "x"
        bare = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
        full = self.tokenizer(probe)["input_ids"]
        for start in range(len(full) - len(bare) + 1):
            if full[start:start + len(bare)] == bare:
                return list(full[:start])
        return []

    def _collect_stop_ids(self) -> set[int]:
        stop = {self.tokenizer.pad_token_id}
        if self.tokenizer.eos_token_id is not None:
            stop.add(self.tokenizer.eos_token_id)
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        if isinstance(eos, int):
            stop.add(eos)
        elif eos:
            stop.update(int(i) for i in eos)
        stop.update(self.format.end_of_turn_ids(self.tokenizer))
        return stop

    def render(self, prompt: PromptLike) -> str:
        """The text the model sees: a `Prompt` in the model's format; a string is taken as already rendered."""
        return self.format.render(prompt) if isinstance(prompt, Prompt) else prompt

    def _prompt_ids(self, prompts: Sequence[PromptLike], budget: Sequence[int] | None = None) -> list[list[int]]:
        """Token ids for each prompt: leading special tokens (BOS) kept, a trailing EOS dropped (the model is
        to continue the text), the body cut from the left so the whole fits in `budget` (default
        `max_input_tokens`)."""
        bodies = self.tokenizer([self.render(p) for p in prompts], add_special_tokens=False)["input_ids"]
        out = []
        for i, body in enumerate(bodies):
            limit = (budget[i] if budget is not None else self.max_input_tokens) - len(self._prefix_ids)
            if limit < 1:
                raise ValueError(f"max_input_tokens={self.max_input_tokens} leaves no room for prompt {i}")
            ids = self._prefix_ids + list(body[-limit:])
            if not ids:
                raise ValueError(f"prompt {i} is empty and the tokenizer adds no start token")
            out.append(ids)
        return out

    def _left_pad(self, rows: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _decode(self, ids: list[int]) -> str:
        """Decode new tokens. Byte-level vocabularies can end mid-character; such bytes are dropped or
        replaced rather than failing the whole batch."""
        try:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        except UnicodeDecodeError:
            pieces = []
            for token in ids:
                try:
                    pieces.append(self.tokenizer.decode([token], skip_special_tokens=True))
                except UnicodeDecodeError:
                    pieces.append("\ufffd")
            return "".join(pieces)

    def _require_model(self) -> torch.nn.Module:
        if self.model is None:
            raise RuntimeError(f"HFBackend({self.model_name}) was closed")
        return self.model

    # -- generation -------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[PromptLike], params: GenerationParams) -> list[Completion]:
        model = self._require_model()
        if not prompts:
            return []
        if params.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {params.temperature}")
        if params.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {params.max_new_tokens}")
        started = time.perf_counter()
        encoded = self._prompt_ids(prompts)
        # Similar lengths in one chunk waste less compute on padding; results go back in input order.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]), reverse=True)
        results: list[Completion | None] = [None] * len(prompts)
        sampling = params.temperature > 0
        options = dict(max_new_tokens=params.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
                       do_sample=sampling)
        if sampling:
            options.update(temperature=params.temperature, top_p=params.top_p)
        else:
            # Cleared so a model's own sampling defaults do not trigger "ignored flag" warnings.
            options.update(temperature=None, top_p=None, top_k=None)
        batches = prompt_tokens = completion_tokens = 0
        with self._lock, torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                ids, mask = self._left_pad([encoded[i] for i in chunk])
                output = model.generate(input_ids=ids, attention_mask=mask, **options)
                batches += 1
                new_tokens = output[:, ids.shape[1]:].tolist()
                for row, index in enumerate(chunk):
                    kept = []
                    for token in new_tokens[row]:
                        if token in self._stop_ids:
                            break
                        kept.append(token)
                    n_prompt = len(encoded[index])
                    results[index] = Completion(text=cut_at_stop(self._decode(kept)), prompt_tokens=n_prompt,
                                                completion_tokens=len(kept))
                    prompt_tokens += n_prompt
                    completion_tokens += len(kept)
        self.usage.add(calls=len(prompts), batches=batches, prompt_tokens=prompt_tokens,
                       completion_tokens=completion_tokens, seconds=time.perf_counter() - started)
        return [r for r in results if r is not None]

    # -- scoring ----------------------------------------------------------------------------------------

    def score_continuations(self, prompts: Sequence[PromptLike], candidates: Sequence[str]) -> list[list[float]]:
        """Sum of log-probs of each candidate's tokens after each prompt, shape [len(prompts), len(candidates)].

        Prompt and candidate are tokenised separately and concatenated, so a candidate's tokens are the same
        after every prompt. Rows (prompt, candidate) are left-padded into chunks of `batch_size`; as every
        row ends in the same column, only the last `max candidate length + 1` logit positions are needed,
        so the log-softmax never sees the full [rows, sequence, vocab] tensor."""
        model = self._require_model()
        if not prompts or not candidates:
            return [[] for _ in prompts]
        started = time.perf_counter()
        cand_ids = self.tokenizer(list(candidates), add_special_tokens=False)["input_ids"]
        for j, ids in enumerate(cand_ids):
            if not ids:
                raise ValueError(f"candidate {j} ({candidates[j]!r}) has no tokens")
            if len(ids) >= self.max_input_tokens:
                raise ValueError(f"candidate {j} is {len(ids)} tokens, max_input_tokens={self.max_input_tokens}")
        longest = max(len(ids) for ids in cand_ids)
        prompt_ids = self._prompt_ids(prompts, budget=[self.max_input_tokens - longest] * len(prompts))
        common = os.path.commonprefix(cand_ids)
        if all(len(ids) == len(common) + 1 for ids in cand_ids):
            # Rating scales (" 1".." 7") differ only in their last token: one row per prompt instead of one per
            # (prompt, candidate) pair, with every candidate read off the last position's distribution.
            return self._score_last_token(model, prompt_ids, common, [ids[-1] for ids in cand_ids], started)
        pairs = [(p, c) for p in range(len(prompts)) for c in range(len(candidates))]
        scores = [[0.0] * len(candidates) for _ in prompts]
        batches = tokens = 0
        with self._lock, torch.inference_mode():
            for start in range(0, len(pairs), self.batch_size):
                chunk = pairs[start:start + self.batch_size]
                rows = [prompt_ids[p] + cand_ids[c] for p, c in chunk]
                ids, mask = self._left_pad(rows)
                keep = min(longest + 1, ids.shape[1])
                logits = self._tail_logits(model, ids, mask, keep)  # [rows, keep, vocab]
                batches += 1
                tokens += int(mask.sum())
                for row, (p, c) in enumerate(chunk):
                    target = torch.tensor(cand_ids[c], device=logits.device)
                    n = len(cand_ids[c])
                    # logits at column t predict token t+1: the candidate's n tokens are the last n
                    # columns, predicted by the n columns before them.
                    step = logits[row, keep - 1 - n:keep - 1].float().log_softmax(dim=-1)
                    scores[p][c] = float(step.gather(1, target[:, None]).sum())
        self.usage.add(calls=len(prompts), batches=batches, prompt_tokens=tokens,
                       seconds=time.perf_counter() - started)
        return scores

    def _score_last_token(self, model: torch.nn.Module, prompt_ids: list[list[int]], common: list[int],
                          last: list[int], started: float) -> list[list[float]]:
        rows = [ids + list(common) for ids in prompt_ids]
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a chunk
        keep = len(common) + 1
        scores: list[list[float]] = [[] for _ in rows]
        batches = tokens = 0
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                ids, mask = self._left_pad([rows[i] for i in chunk])
                logp = self._tail_logits(model, ids, mask, keep).float().log_softmax(dim=-1)  # [rows, keep, V]
                batches += 1
                tokens += int(mask.sum())
                # Column j of the tail predicts the token after it: the shared tokens, then the last one.
                shared = sum(logp[:, j, tok] for j, tok in enumerate(common)) if common else 0.0
                final = logp[:, keep - 1, :][:, last] + (shared[:, None] if common else 0.0)
                for row, index in enumerate(chunk):
                    scores[index] = [float(v) for v in final[row]]
        self.usage.add(calls=len(rows), batches=batches, prompt_tokens=tokens,
                       seconds=time.perf_counter() - started)
        return scores

    def _tail_logits(self, model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                     keep: int) -> torch.Tensor:
        # Left padding shifts every row, so positions must come from the mask, not the column index.
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        extra = {"logits_to_keep": keep} if self._accepts_logits_to_keep else {}
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **extra)
        return out.logits[:, -keep:, :]

    def close(self) -> None:
        if self.model is None:
            return
        on_cuda = self.device.type == "cuda"
        self.model = None
        gc.collect()
        if on_cuda:
            torch.cuda.empty_cache()
