"""Sequence packing: a micro-batch's sequences back to back in rows without padding (issue 32).

Padding a micro-batch to its longest sequence spends compute on pad tokens, and the trainer's
two passes (predictions and regular sequences) pad to the longer of both. Packed, the non-pad
tokens of the rows sit back to back, in order, in rows of at most ``max(longest sequence,
PACK_TOKENS)`` tokens. The position ids restart at 0 for each sequence, and with no attention
mask transformers reads those restarts as sequence boundaries
(``masking_utils.find_packed_sequence_indices``) and builds the block-diagonal causal mask, so
no token attends across sequences. A packed row's tail of filler tokens counts as one more
sequence (its positions restart too) and is never read. The log-probs come back in the padded
``[rows, seq]`` layout, so every loss reads them unchanged.

Why rows no longer than the longest sequence (``PACK_TOKENS = 0``): on CPU the attention of a
packed row costs ``T²`` over its ``T`` tokens (the mask hides the cross-sequence scores, but
sdpa computes them). With a small model that cost is not small: SmolLM2-135M (576 wide) at 656
tokens spent 25% of a training step in sdpa, and packing two 328-token sequences into one row
doubles it. Rows of the padded width never cost more than padding in either term, matmuls or
attention, and save the rows that short sequences fill together. A kernel that skips masked
blocks (flash-attention's varlen path on GPU) would make longer rows pay.
"""

from __future__ import annotations

from typing import Any

import torch

from rlmec.trainer.loss import token_logprobs

PACK_TOKENS = 0


def bins(lengths: list[int], width: int) -> list[list[int]]:
    """Consecutive runs of row indices whose lengths add up to at most ``width`` (next fit, so
    the rows stay in order); a row longer than ``width`` gets a bin of its own."""
    out: list[list[int]] = []
    used = width
    for i, n in enumerate(lengths):
        if used + n > width:
            out.append([])
            used = 0
        out[-1].append(i)
        used += n
    return out


def packed_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    *,
    pack_tokens: int | None = None,
) -> torch.Tensor:
    """``token_logprobs`` of each row, computed over packed rows.

    Args:
        model: a causal LM taking ``input_ids``/``position_ids`` (a DeepSpeed engine too).
        input_ids, attention_mask, position_ids: ``[rows, seq]``, padded either side; each
            row's kept positions count from 0.
        pack_tokens: a packed row holds at most ``max(longest row, pack_tokens)`` tokens
            (default :data:`PACK_TOKENS`).

    Returns:
        ``[rows, seq]``: entry ``j`` of a row is ``log p(token j | the row's tokens before
        it)``, as :func:`token_logprobs` on the padded rows gives; 0 on padding. A row's first
        token has no context (0 padded, garbage packed): it is a prompt token, never scored.
    """
    keep = attention_mask.bool()
    lengths = [int(n) for n in keep.sum(dim=1)]
    groups = bins(lengths, max(max(lengths), pack_tokens or PACK_TOKENS))
    width = max(sum(lengths[i] for i in g) for g in groups)
    ids = torch.zeros((len(groups), width), dtype=input_ids.dtype, device=input_ids.device)
    pos = torch.zeros_like(ids)
    real = torch.zeros_like(ids, dtype=torch.bool)
    for b, group in enumerate(groups):
        row_ids = torch.cat([input_ids[i][keep[i]] for i in group])
        row_pos = torch.cat([position_ids[i][keep[i]] for i in group])
        n = row_ids.numel()
        ids[b, :n], pos[b, :n], real[b, :n] = row_ids, row_pos, True
        pos[b, n:] = torch.arange(width - n, device=ids.device)  # the filler: its own sequence
    logits = model(input_ids=ids, position_ids=pos, attention_mask=None, use_cache=False).logits
    flat = token_logprobs(logits, ids)[real]  # row-major: the rows' kept tokens, in order
    return flat.new_zeros(input_ids.shape).masked_scatter(keep, flat)
