"""Response log-probs with the prompt shared between the responses of a query.

Each group becomes ONE packed row: prompt, response 1, ..., response K. A 4D attention mask lets every
response see the prompt and itself (causally) but not the other responses, and position ids restart at the
prompt's length for each response, so each response is computed exactly as in its own (prompt, response)
sequence while the prompt runs once. Log-probs are taken only at response positions: the decoder's hidden
states are gathered there and the LM head + log-softmax run in chunks, recomputed in backward, so no
[B, T, V] float32 logits tensor ever exists.

SDPA takes the mask dense and computes every (query, key) block, the masked cross-response ones included; flex
attention (training.attn_implementation: flex, CUDA) takes it as a block mask and skips them. On CPU torch has no
flex backward, so flex falls back to SDPA there (forward only, SmolLM2-135M, one prompt + 4 responses, 2 busy
cores: about as fast as SDPA once compiled, ~80-100 MB more peak memory).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from alignment_pipeline.training.data import TokenizedGroup

PAD_SEGMENT = -1

log = logging.getLogger(__name__)


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [B, T]
    position_ids: torch.Tensor  # [B, T]
    segments: torch.Tensor  # [B, T]: 0 prompt, k>=1 response k, -1 padding
    # One entry per response token to score: the packed row, the position whose output predicts it,
    # the token id, and the (group, response, token) slot it fills.
    src_row: torch.Tensor  # [N]
    src_pos: torch.Tensor  # [N]
    target: torch.Tensor  # [N]
    slot_group: torch.Tensor  # [N]
    slot_response: torch.Tensor  # [N]
    slot_token: torch.Tensor  # [N]
    num_responses: torch.Tensor  # [B] responses per group
    max_responses: int
    max_response_len: int
    group_indices: list[int]
    data_tokens: int  # prompt + every response, as consumed (the tokens/s unit)
    packed_tokens: int  # non-padding positions actually run through the model
    group_sizes: tuple[int, ...] = ()  # responses per group, on the host (checks without a device sync)

    def to(self, device: torch.device | str) -> PackedBatch:
        moved = {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
                 for k, v in self.__dict__.items()}
        return PackedBatch(**moved)

    def attention_mask(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """[B, 1, T, T]: query q sees key k iff k <= q, neither is padding, and k is in the prompt or in q's
        own response. Padding queries see themselves only (a fully masked row would give NaN in SDPA).
        Boolean (True = attend) unless `dtype` asks for an additive float mask (eager attention)."""
        seg = self.segments
        t = seg.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=seg.device).tril()
        q, k = seg[:, :, None], seg[:, None, :]
        allowed = causal[None] & (k != PAD_SEGMENT) & (q != PAD_SEGMENT) & ((k == 0) | (k == q))
        allowed |= torch.eye(t, dtype=torch.bool, device=seg.device)[None] & (q == PAD_SEGMENT)
        allowed = allowed[:, None]
        if dtype is None:
            return allowed
        additive = torch.zeros(allowed.shape, dtype=dtype, device=seg.device)
        return additive.masked_fill_(~allowed, torch.finfo(dtype).min)

    def block_mask(self):
        """The same mask as `attention_mask` for flex attention, as a BlockMask: blocks that no query may see
        (one response's queries against another response's keys, padding) are skipped, not computed and then
        masked as SDPA does with a dense mask."""
        from torch.nn.attention.flex_attention import create_block_mask

        seg = self.segments

        def allowed(b, h, q, k):
            sq, sk = seg[b, q], seg[b, k]
            same = (k <= q) & (sk != PAD_SEGMENT) & (sq != PAD_SEGMENT) & ((sk == 0) | (sk == sq))
            return same | ((q == k) & (sq == PAD_SEGMENT))

        b, t = seg.shape
        return create_block_mask(allowed, B=b, H=None, Q_LEN=t, KV_LEN=t, device=seg.device)


def pack_groups(groups: list[TokenizedGroup], pad_id: int) -> PackedBatch:
    """Pack each group into one right-padded row (prompt, then every response)."""
    if not groups:
        raise ValueError("cannot pack an empty batch")
    t = max(g.packed_length for g in groups)
    b = len(groups)
    input_ids = torch.full((b, t), pad_id, dtype=torch.long)
    position_ids = torch.zeros((b, t), dtype=torch.long)
    segments = torch.full((b, t), PAD_SEGMENT, dtype=torch.long)
    src_row, src_pos, target, s_group, s_resp, s_tok = [], [], [], [], [], []
    for row, g in enumerate(groups):
        p = len(g.prompt_ids)
        if p == 0:
            raise ValueError(f"group {g.index}: empty prompt (a response's first token needs a context)")
        input_ids[row, :p] = torch.tensor(g.prompt_ids)
        position_ids[row, :p] = torch.arange(p)
        segments[row, :p] = 0
        start = p
        for k, ids in enumerate(g.response_ids):
            n = len(ids)
            input_ids[row, start:start + n] = torch.tensor(ids)
            position_ids[row, start:start + n] = torch.arange(p, p + n)
            segments[row, start:start + n] = k + 1
            # Token j of response k is predicted by the output at the previous token of its own sequence:
            # the last prompt token for j = 0, else the response's own token j - 1.
            src = [p - 1] + list(range(start, start + n - 1))
            src_row += [row] * n
            src_pos += src
            target += ids
            s_group += [row] * n
            s_resp += [k] * n
            s_tok += list(range(n))
            start += n
    as_long = lambda xs: torch.tensor(xs, dtype=torch.long)  # noqa: E731
    return PackedBatch(
        input_ids=input_ids, position_ids=position_ids, segments=segments,
        src_row=as_long(src_row), src_pos=as_long(src_pos), target=as_long(target),
        slot_group=as_long(s_group), slot_response=as_long(s_resp), slot_token=as_long(s_tok),
        num_responses=as_long([len(g.response_ids) for g in groups]),
        max_responses=max(len(g.response_ids) for g in groups),
        max_response_len=max(len(r) for g in groups for r in g.response_ids),
        group_indices=[g.index for g in groups],
        data_tokens=sum(g.data_tokens for g in groups),
        packed_tokens=sum(g.packed_length for g in groups),
        group_sizes=tuple(len(g.response_ids) for g in groups),
    )


@dataclass
class ResponseLogps:
    token_logps: torch.Tensor  # [B, K, R] float32, 0 where masked
    token_mask: torch.Tensor  # [B, K, R] bool: real response tokens
    response_mask: torch.Tensor  # [B, K] bool: which responses exist

    @property
    def logp_sum(self) -> torch.Tensor:
        return self.token_logps.sum(-1)

    @property
    def lengths(self) -> torch.Tensor:
        return self.token_mask.sum(-1)


class ScaledHead(torch.nn.Module):
    """The LM head followed by the logit scalings the model's own forward applies after it, in its order:
    Cohere's `logit_scale` (×), Falcon-H1's `lm_head_multiplier` (×), Granite's `logits_scaling` (÷), then
    Gemma 2/3's `final_logit_softcapping` (cap · tanh(logits / cap))."""

    def __init__(self, head: torch.nn.Module, config):
        super().__init__()
        self.head = head
        get = lambda name: getattr(config, name, None)  # noqa: E731
        self.multiply = float(get("logit_scale") or 1.0) * float(get("lm_head_multiplier") or 1.0)
        self.divide = float(get("logits_scaling") or 1.0)
        self.softcap = get("final_logit_softcapping")

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.head(hidden)
        if self.multiply != 1.0:
            logits = logits * self.multiply
        if self.divide != 1.0:
            logits = logits / self.divide
        if self.softcap:
            logits = torch.tanh(logits.float() / self.softcap) * self.softcap
        return logits


def split_causal_lm(model) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The decoder (hidden states) and the LM head of a causal LM, also when wrapped by peft; the head carries
    the model's logit scalings (`ScaledHead`), so chunked log-probs equal the model's own."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = inner.get_decoder()
    head = inner.get_output_embeddings()
    if decoder is None or head is None:
        raise TypeError(f"{type(inner).__name__} exposes no decoder/output embeddings; not a causal LM")
    return decoder, ScaledHead(head, inner.config)


def model_attn_implementation(name: str, device: torch.device | str) -> str:
    """training.attn_implementation as transformers names it, on `device`: flex attention needs CUDA (torch has
    no flex backward on CPU), so on CPU "flex" runs SDPA, with a warning."""
    if name != "flex":
        return name
    if torch.device(device).type == "cuda":
        return "flex_attention"
    log.warning("attn_implementation flex: flex attention has no backward on %s; using sdpa", device)
    return "sdpa"


def disable_dropout(model: torch.nn.Module) -> int:
    """Turn every dropout of `model` off (as TRL's DPO `disable_dropout`): dropout modules get p = 0, and
    attention modules that take their dropout rate from the config (Llama's `attention_dropout`, applied in
    training mode) get 0. A policy trained with dropout would otherwise score differently from its
    reference, scored in eval mode, and the log-ratio at step 0 would not be zero. Returns how many were on."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            changed += module.p > 0
            module.p = 0.0
        for attr in ("attention_dropout", "attn_dropout", "dropout"):
            value = getattr(module, attr, None)
            if isinstance(value, float) and not isinstance(value, bool):
                changed += value > 0
                setattr(module, attr, 0.0)
    return changed


def _chunk_logps(head: torch.nn.Module, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    logits = head(hidden).float()
    return logits.gather(-1, target[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def gather_logps(head: torch.nn.Module, hidden: torch.Tensor, target: torch.Tensor, chunk_size: int
                 ) -> torch.Tensor:
    """log p(target | hidden) for [N, H] hidden states, `chunk_size` rows of logits at a time. With grad, each
    chunk's logits are recomputed in backward instead of being kept: memory O(chunk_size × V)."""
    out = []
    for start in range(0, hidden.shape[0], chunk_size):
        h, y = hidden[start:start + chunk_size], target[start:start + chunk_size]
        if torch.is_grad_enabled() and (h.requires_grad or any(p.requires_grad for p in head.parameters())):
            out.append(checkpoint(_chunk_logps, head, h, y, use_reentrant=False))
        else:
            out.append(_chunk_logps(head, h, y))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=torch.float32)


class PackedLogps(torch.nn.Module):
    """A causal LM whose forward is `response_logps`: the module DistributedDataParallel wraps, so the whole
    prompt-sharing forward (decoder and chunked LM head) runs inside DDP's forward and its backward all-reduces
    the gradients. Returns plain tensors (token log-probs, token mask, response mask)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: PackedBatch, chunk_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lp = response_logps(self.model, batch, chunk_size=chunk_size)
        return lp.token_logps, lp.token_mask, lp.response_mask


def response_logps(model, batch: PackedBatch, *, chunk_size: int = 1024) -> ResponseLogps:
    """Per-token log-probs of every response of every group in `batch` (already on the model's device).
    `model` is a causal LM (plain or peft), or a `PackedLogps` wrapped in DistributedDataParallel or sharded by
    FSDP, which is then called so its gradient synchronisation (and FSDP's weight gathering) takes part."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(model, DistributedDataParallel):
        if not isinstance(model.module, PackedLogps):
            raise TypeError("DistributedDataParallel must wrap a PackedLogps(model) for the packed forward")
        return ResponseLogps(*model(batch, chunk_size=chunk_size))
    if isinstance(model, PackedLogps) and _fsdp_sharded(model):  # the FSDP root (training/fsdp.py): called,
        return ResponseLogps(*model(batch, chunk_size=chunk_size))  # so that it gathers its own weights
    if isinstance(model, PackedLogps):
        model = model.model
    decoder, head = split_causal_lm(model)
    attn_impl = getattr(decoder.config, "_attn_implementation", "sdpa")
    if attn_impl == "flex_attention":
        mask = batch.block_mask()
    elif attn_impl in ("sdpa", "eager"):
        mask = batch.attention_mask(None if attn_impl == "sdpa" else torch.float32)
    else:
        raise ValueError(f"attention implementation {attn_impl!r} cannot take the prefix-sharing mask; "
                         "load the model with attn_implementation 'sdpa', 'eager' or 'flex_attention'")
    out = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=mask,
                  use_cache=False)
    hidden = out.last_hidden_state[batch.src_row, batch.src_pos]  # [N, H]: response positions only
    logps = gather_logps(head, hidden, batch.target, chunk_size)
    b = batch.input_ids.shape[0]
    shape = (b, batch.max_responses, batch.max_response_len)
    token_logps = torch.zeros(shape, dtype=torch.float32, device=logps.device)
    token_mask = torch.zeros(shape, dtype=torch.bool, device=logps.device)
    index = (batch.slot_group, batch.slot_response, batch.slot_token)
    token_logps = token_logps.index_put(index, logps)
    token_mask[index] = True
    response_mask = (torch.arange(batch.max_responses, device=logps.device)[None]
                     < batch.num_responses.to(logps.device)[:, None])
    return ResponseLogps(token_logps=token_logps, token_mask=token_mask, response_mask=response_mask)


def _fsdp_sharded(module: torch.nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # torch before FSDP2 took this name: nothing is sharded by it
        return False
    return isinstance(module, FSDPModule)
