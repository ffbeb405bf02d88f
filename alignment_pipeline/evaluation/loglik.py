"""Log-likelihoods of (context, continuation) requests, equal to lm-eval's HFLM on the same requests but
without recomputing what requests share.

Tokens are exactly lm-eval's (`_encode_pair`: trailing spaces of the context move to the continuation, the
whole string is encoded and split at the encoded context's length; the same left truncation to max_length+1).
The work differs:
- the token prefix every context of a call shares (TruthfulQA's six-question preamble) runs once; its keys and
  values are reused by every context;
- each item's context and all its choices run as one row: every choice attends to the context and to itself
  only (a tree-shaped attention mask), so the context is computed once and a one-token choice (ETHICS' " no" /
  " yes") costs nothing beyond it;
- the LM head is applied only at the positions whose predictions are scored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

_SEQLEN_ATTRS = ("n_positions", "max_position_embeddings", "n_ctx")
_HUGE_MODEL_MAX = 1_000_000_000_000_000_019_884_624_838_656  # transformers' "no limit" sentinel


@dataclass(frozen=True)
class _Row:
    tokens: list[int]  # context + continuation, truncated like lm-eval
    n_cont: int


class LoglikScorer:
    """Scores groups of requests that share a context (one group per multiple-choice item)."""

    def __init__(self, model, tokenizer, *, batch_tokens: int = 2048, max_batch: int = 32,
                 pair_encoder: Callable[[str, str], tuple[list[int], list[int]]] | None = None) -> None:
        # pair_encoder replaces lm-eval's tokenisation (a judge scores its prompts as it generates from them)
        self.pair_encoder = pair_encoder
        self.model = model
        self.tokenizer = tokenizer
        self.batch_tokens = batch_tokens
        self.max_batch = max_batch
        self.device = next(model.parameters()).device
        self.max_length = max_length(model, tokenizer)
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        bos = tokenizer.bos_token
        self._bos_text = bos if bos else None
        self.tokens_run = 0

    # -- tokens, as lm-eval makes them ------------------------------------------------------------------
    def tok_encode(self, text: str) -> list[int]:
        # lm-eval's HFLM (add_bos_token unset): the tokenizer's own special tokens, unless the text starts
        # with the BOS string already.
        if self._bos_text and text.startswith(self._bos_text):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(text)

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip())
        if spaces:
            continuation = context[-spaces:] + continuation
            context = context[:-spaces]
        whole = self.tok_encode(context + continuation)
        ctx = self.tok_encode(context)
        return ctx, whole[len(ctx):]

    def _row(self, context: str, continuation: str) -> _Row:
        ctx, cont = (self.pair_encoder or self.encode_pair)(context, continuation)
        if not cont:
            raise ValueError(f"continuation {continuation!r} has no tokens after context {context[-40:]!r}")
        tokens = (ctx + cont)[-(self.max_length + 1):]
        return _Row(tokens, len(cont))

    # -- scoring ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, groups: Sequence[Sequence[tuple[str, str]]]) -> list[list[tuple[float, bool]]]:
        """(log-likelihood, is_greedy) of every request, grouped as given; requests of a group usually share
        their context (they need not)."""
        self._greedy_steps, self._greedy = 0, {}
        return self._score(groups)

    @torch.inference_mode()
    def score_and_continue(self, contexts: Sequence[str], candidates: Sequence[str],
                           steps: int) -> tuple[list[list[float]], list[str]]:
        """Log-likelihoods of every candidate after every context, and each context's greedy continuation of up to
        `steps` tokens, both from one pass over the contexts (a judge's expectation and its reply)."""
        self._greedy_steps, self._greedy = steps, {}
        scored = self._score([[(c, x) for x in candidates] for c in contexts])
        texts = []
        for i in range(len(contexts)):
            ids = []
            for token in self._greedy[i]:
                if token in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id):
                    break
                ids.append(token)
            texts.append(self.tokenizer.decode(ids, skip_special_tokens=True))
        return [[ll for ll, _ in row] for row in scored], texts

    def _score(self, groups: Sequence[Sequence[tuple[str, str]]]) -> list[list[tuple[float, bool]]]:
        if self._greedy_steps and any(len({c for c, _ in g}) != 1 for g in groups):
            raise ValueError("greedy continuation needs one context per group")
        rows = [[self._row(c, x) for c, x in group] for group in groups]
        # Each group's own context: what all its rows share, leaving every row at least one token of its own.
        contexts = []
        for group in rows:
            shared = os.path.commonprefix([r.tokens for r in group])
            contexts.append(shared[:min(len(r.tokens) for r in group) - 1])
        if any(not c for c in contexts) and not self._greedy_steps:  # nothing shared: rows on their own
            flat = [[r] for group in rows for r in group]
            out = self._score_groups(flat, [r.tokens[:1] for g in flat for r in g])
            it = iter(out)
            return [[next(it)[0] for _ in group] for group in rows]
        return self._score_groups(rows, contexts)

    def _score_groups(self, rows: list[list[_Row]], contexts: list[list[int]]) -> list[list[tuple[float, bool]]]:
        # The shared prefix stops before the first position any row reads a prediction from.
        first_read = min(len(r.tokens) - r.n_cont - 1 for group in rows for r in group)
        prefix = os.path.commonprefix(contexts)[:min(min(len(c) for c in contexts) - 1, first_read)]
        past = self._forward_prefix(prefix) if len(prefix) >= 8 else None  # a few tokens are not worth a cache
        g = len(prefix) if past is not None else 0
        packed = [_pack(group, context, g) for group, context in zip(rows, contexts, strict=True)]
        # where each context's own tokens end (the greedy continuation starts there)
        self._prompt_end = [len(group[0].tokens) - group[0].n_cont for group in rows]
        results: list[list[tuple[float, bool]] | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(packed[i].tokens))
        chunk: list[int] = []
        for i in order:
            if chunk and (len(packed[i].tokens) * (len(chunk) + 1) > self.batch_tokens or len(chunk) >= self.max_batch):
                self._score_chunk([packed[j] for j in chunk], chunk, past, g, results)
                chunk = []
            chunk.append(i)
        if chunk:
            self._score_chunk([packed[j] for j in chunk], chunk, past, g, results)
        return [r for r in results if r is not None]

    def _forward_prefix(self, prefix: list[int]) -> DynamicCache:
        ids = torch.tensor([prefix], device=self.device)
        out = self.decoder(input_ids=ids, use_cache=True)
        self.tokens_run += len(prefix)
        return out.past_key_values

    def _score_chunk(self, packs: list[_Packed], index: list[int], past, g: int, results) -> None:
        """One forward for a chunk of groups: each group's context and all its choices in one row, each choice
        seeing the prefix, the context and itself only (a tree-shaped attention mask)."""
        b, width = len(packs), max(len(p.tokens) for p in packs)
        ids = torch.zeros((b, width), dtype=torch.long)
        positions = torch.zeros((b, width), dtype=torch.long)
        allowed = torch.zeros((b, 1, width, g + width), dtype=torch.bool)
        allowed[:, :, :, :g] = True
        for r, p in enumerate(packs):
            n = len(p.tokens)
            ids[r, :n] = torch.tensor(p.tokens)
            positions[r, :n] = torch.tensor(p.positions)
            branch = torch.tensor(p.branch)
            # a token sees earlier tokens of the context (branch -1) and of its own branch
            earlier = torch.tril(torch.ones((n, n), dtype=torch.bool))
            same = (branch[None, :] == -1) | (branch[None, :] == branch[:, None])
            allowed[r, 0, :n, g:g + n] = earlier & same
            allowed[r, 0, n:, g + n:] = torch.eye(width - n, dtype=torch.bool)  # padding sees itself only
        cache = None
        if past is not None:
            cache = DynamicCache([(layer.keys.expand(b, -1, -1, -1), layer.values.expand(b, -1, -1, -1))
                                  for layer in past.layers])
        if self._greedy_steps and cache is None:
            cache = DynamicCache()
        hidden = self.decoder(input_ids=ids.to(self.device), attention_mask=allowed.to(self.device),
                              position_ids=positions.to(self.device), cache=cache,
                              use_cache=cache is not None).last_hidden_state
        self.tokens_run += sum(len(p.tokens) for p in packs)
        if self._greedy_steps:
            self._continue(hidden, cache, [self._prompt_end[i] for i in index], index, g, width)
        for r, (p, i) in enumerate(zip(packs, index, strict=True)):
            reads = [k for reads in p.reads for k in reads]
            logp = self.head(hidden[r, reads]).float().log_softmax(dim=-1)
            scored, at = [], 0
            for targets in p.targets:
                part = logp[at:at + len(targets)]
                at += len(targets)
                target = torch.tensor(targets, device=logp.device)
                scored.append((float(part.gather(1, target[:, None]).sum()),
                               bool((part.argmax(dim=-1) == target).all())))
            results[i] = scored


    def _continue(self, hidden, cache, ends: list[int], index: list[int], g: int, width: int) -> None:
        """Greedy steps after each row's prompt: each new token sees the prefix, the prompt's own tokens and the
        tokens generated before it, never the scored candidates packed after the prompt."""
        b = len(ends)
        last = torch.stack([hidden[r, end - 1 - g] for r, end in enumerate(ends)])
        token = self.head(last).argmax(dim=-1)
        out = [[int(t)] for t in token]
        seen = torch.zeros((b, g + width), dtype=torch.bool)
        seen[:, :g] = True
        for r, end in enumerate(ends):
            seen[r, g:end] = True
        for step in range(1, self._greedy_steps):
            seen = torch.cat([seen, torch.ones((b, 1), dtype=torch.bool)], dim=1)
            positions = torch.tensor([[end + step - 1] for end in ends])
            state = self.decoder(input_ids=token[:, None], attention_mask=seen[:, None, None, :].to(self.device),
                                 position_ids=positions.to(self.device), cache=cache,
                                 use_cache=True).last_hidden_state
            token = self.head(state[:, -1]).argmax(dim=-1)
            for r in range(b):
                out[r].append(int(token[r]))
        for r, i in enumerate(index):
            self._greedy[i] = out[r]


@dataclass(frozen=True)
class _Packed:
    tokens: list[int]  # the context after the shared prefix, then every choice's tokens but its last
    positions: list[int]
    branch: list[int]  # -1: context; j: choice j
    reads: list[list[int]]  # per choice: packed positions whose predictions score its continuation tokens
    targets: list[list[int]]  # per choice: those continuation tokens


def _pack(group: list[_Row], context: list[int], g: int) -> _Packed:
    tokens = list(context[g:])
    positions = list(range(g, len(context)))
    branch = [-1] * len(tokens)
    reads, targets = [], []
    for j, row in enumerate(group):
        start = len(tokens)
        own = row.tokens[len(context):-1]
        tokens += own
        positions += range(len(context), len(context) + len(own))
        branch += [j] * len(own)
        first = len(row.tokens) - row.n_cont
        # token q is predicted at absolute position q-1: inside the context, or on this choice's branch
        reads.append([q - 1 - g if q - 1 < len(context) else start + q - 1 - len(context)
                      for q in range(first, len(row.tokens))])
        targets.append(row.tokens[first:])
    return _Packed(tokens, positions, branch, reads, targets)


def max_length(model, tokenizer) -> int:
    """lm-eval HFLM's max_length for a model given no max_length."""
    for attr in _SEQLEN_ATTRS:
        if hasattr(model.config, attr):
            return int(getattr(model.config, attr))
    if getattr(tokenizer, "model_max_length", _HUGE_MODEL_MAX) != _HUGE_MODEL_MAX:
        return int(tokenizer.model_max_length)
    return 2048
