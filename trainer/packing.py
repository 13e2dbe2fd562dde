"""Sequence packing: a micro-batch's sequences as one row without padding (issue 32).

Padding a micro-batch to its longest sequence spends compute on pad tokens, and the trainer's
two passes (predictions and regular sequences) pad to the longer of both. Packed, the non-pad
tokens of every row sit back to back in one row; the position ids restart at 0 for each
sequence, and with no attention mask transformers reads those restarts as sequence boundaries
(``masking_utils.find_packed_sequence_indices``) and builds the block-diagonal causal mask, so
no token attends across sequences. The log-probs come back in the padded ``[rows, seq]``
layout, so every loss reads them unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from rlmec.trainer.loss import token_logprobs


def packed_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor
) -> torch.Tensor:
    """``token_logprobs`` of each row, computed in one packed row.

    Args:
        model: a causal LM taking ``input_ids``/``position_ids`` (a DeepSpeed engine too).
        input_ids, attention_mask, position_ids: ``[rows, seq]``, padded either side; each
            row's kept positions count from 0.

    Returns:
        ``[rows, seq]``: entry ``j`` of a row is ``log p(token j | the row's tokens before
        it)``, as :func:`token_logprobs` on the padded rows gives; 0 on padding. A row's first
        token has no context (0 padded, garbage packed): it is a prompt token, never scored.
    """
    keep = attention_mask.bool()
    ids, pos = input_ids[keep][None], position_ids[keep][None]
    logits = model(input_ids=ids, position_ids=pos, attention_mask=None, use_cache=False).logits
    flat = token_logprobs(logits, ids)[0]
    return flat.new_zeros(input_ids.shape).masked_scatter(keep, flat)
