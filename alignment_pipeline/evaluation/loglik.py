"""Log-likelihoods of (context, continuation) requests, equal to lm-eval's HFLM on the same requests but
without recomputing what requests share.

Tokens are exactly lm-eval's (`_encode_pair`: trailing spaces of the context move to the continuation, the
whole string is encoded and split at the encoded context's length; the same left truncation to max_length+1).
The work differs:
- the token prefix every context of a call shares (TruthfulQA's six-question preamble) runs once; its keys and
  values are reused by every context;
- each item's context runs once for all its choices; a choice then runs only its own tokens against the cached
  context (a one-token choice, ETHICS' " no"/" yes", needs no pass of its own);
- the LM head is applied only at the positions whose predictions are scored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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

    def __init__(self, model, tokenizer, *, batch_tokens: int = 2048, max_batch: int = 32) -> None:
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
        ctx, cont = self.encode_pair(context, continuation)
        if not cont:
            raise ValueError(f"continuation {continuation!r} has no tokens after context {context[-40:]!r}")
        tokens = (ctx + cont)[-(self.max_length + 1):]
        return _Row(tokens, len(cont))

    # -- scoring ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score(self, groups: Sequence[Sequence[tuple[str, str]]]) -> list[list[tuple[float, bool]]]:
        """(log-likelihood, is_greedy) of every request, grouped as given; requests of a group usually share
        their context (they need not)."""
        rows = [[self._row(c, x) for c, x in group] for group in groups]
        # Each group's own context: what all its rows share, leaving every row at least one token of its own.
        contexts = []
        for group in rows:
            shared = os.path.commonprefix([r.tokens for r in group])
            contexts.append(shared[:min(len(r.tokens) for r in group) - 1])
        if any(not c for c in contexts):  # nothing shared in some group: score its rows on their own
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
        results: list[list[tuple[float, bool]] | None] = [None] * len(rows)
        order = sorted(range(len(rows)), key=lambda i: len(contexts[i]))
        chunk: list[int] = []
        for i in order:
            width = max(len(contexts[j]) - g for j in [*chunk, i])
            if chunk and (width * (len(chunk) + 1) > self.batch_tokens or len(chunk) >= self.max_batch):
                self._score_chunk(chunk, rows, contexts, past, g, results)
                chunk = []
            chunk.append(i)
        if chunk:
            self._score_chunk(chunk, rows, contexts, past, g, results)
        return [r for r in results if r is not None]

    def _forward_prefix(self, prefix: list[int]) -> DynamicCache:
        ids = torch.tensor([prefix], device=self.device)
        out = self.decoder(input_ids=ids, use_cache=True)
        self.tokens_run += len(prefix)
        return out.past_key_values

    def _score_chunk(self, chunk, rows, contexts, past, g, results) -> None:
        b = len(chunk)
        ctx = [contexts[i][g:] for i in chunk]
        width = max(len(c) for c in ctx)
        ids = torch.zeros((b, width), dtype=torch.long)
        mask = torch.zeros((b, g + width), dtype=torch.long)
        mask[:, :g] = 1
        for r, c in enumerate(ctx):
            ids[r, :len(c)] = torch.tensor(c)
            mask[r, g:g + len(c)] = 1
        positions = torch.arange(g, g + width).expand(b, width)
        cache = _expand(past, [0] * b) if past is not None else DynamicCache()
        hidden = self.decoder(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                              position_ids=positions.to(self.device), cache=cache,
                              use_cache=True).last_hidden_state
        self.tokens_run += sum(len(c) for c in ctx)
        # Continuation tokens predicted inside the context (choices sharing leading tokens) and at its last
        # position are read from the context pass; the rest from one pass of each row's remaining tokens.
        conts = []  # (chunk row, group index, row index, remainder tokens to feed)
        for r, i in enumerate(chunk):
            for k, row in enumerate(rows[i]):
                rest = row.tokens[len(contexts[i]):-1]
                conts.append((r, i, k, rest))
        need_pass = [c for c in conts if c[3]]
        cont_hidden: dict[tuple[int, int], torch.Tensor] = {}
        for start in range(0, len(need_pass), self.max_batch):
            part = need_pass[start:start + self.max_batch]
            m = max(len(c[3]) for c in part)
            cids = torch.zeros((len(part), m), dtype=torch.long)
            cmask = torch.cat([mask[[c[0] for c in part]], torch.zeros((len(part), m), dtype=torch.long)], dim=1)
            cpos = torch.zeros((len(part), m), dtype=torch.long)
            for r, (_, i, _, rest) in enumerate(part):
                cids[r, :len(rest)] = torch.tensor(rest)
                cmask[r, g + width:g + width + len(rest)] = 1
                cpos[r] = torch.arange(len(contexts[i]), len(contexts[i]) + m)
            ccache = _expand(cache, [c[0] for c in part])
            out = self.decoder(input_ids=cids.to(self.device), attention_mask=cmask.to(self.device),
                               position_ids=cpos.to(self.device), cache=ccache,
                               use_cache=True).last_hidden_state
            self.tokens_run += sum(len(c[3]) for c in part)
            for r, (_, i, k, rest) in enumerate(part):
                cont_hidden[(i, k)] = out[r, :len(rest)]
        for r, i in enumerate(chunk):
            scored = []
            n_ctx = len(contexts[i])
            for k, row in enumerate(rows[i]):
                first = len(row.tokens) - row.n_cont  # index of the first continuation token
                # hidden state predicting token q sits at position q - 1
                states = []
                for q in range(first, len(row.tokens)):
                    p = q - 1
                    states.append(hidden[r, p - g] if p < n_ctx else cont_hidden[(i, k)][p - n_ctx])
                logp = self.head(torch.stack(states)).float().log_softmax(dim=-1)
                target = torch.tensor(row.tokens[first:], device=logp.device)
                ll = float(logp.gather(1, target[:, None]).sum())
                greedy = bool((logp.argmax(dim=-1) == target).all())
                scored.append((ll, greedy))
            results[i] = scored


def _expand(cache: DynamicCache, index: list[int]) -> DynamicCache:
    """A new cache holding batch rows `index` of `cache` (the original is left as it is)."""
    idx = torch.tensor(index, device=cache.layers[0].keys.device)
    return DynamicCache([(layer.keys.index_select(0, idx), layer.values.index_select(0, idx))
                         for layer in cache.layers])


def max_length(model, tokenizer) -> int:
    """lm-eval HFLM's max_length for a model given no max_length."""
    for attr in _SEQLEN_ATTRS:
        if hasattr(model.config, attr):
            return int(getattr(model.config, attr))
    if getattr(tokenizer, "model_max_length", _HUGE_MODEL_MAX) != _HUGE_MODEL_MAX:
        return int(tokenizer.model_max_length)
    return 2048
