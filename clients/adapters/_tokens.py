"""The service's per-token values on a framework's own token ids (method §6): the service
returns them as character spans of the decoded text, and they go onto the ids by those ids'
character offsets (exactly the service's values when the tokenizer reproduces the ids)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlmec.clients.adapters._common import summarize, unjudged
from rlmec.shared.schemas import ScoredSample
from rlmec.shared.spans import project
from rlmec.shared.tokenization import encode_output


def token_offsets(tokenizer: Any, ids: Sequence[int], text: str) -> list[tuple[int, int]]:
    """Character offsets in ``text`` (the ids decoded without special tokens) of each of
    ``ids``: from re-encoding when that gives the same ids (the usual case), else by decoding
    growing prefixes (exact, slower)."""
    encoded = encode_output(tokenizer, text, add_eos=False)
    if encoded.token_ids == list(ids):
        return list(encoded.offsets)
    offsets: list[tuple[int, int]] = []
    previous = 0
    for k in range(1, len(ids) + 1):
        end = len(tokenizer.decode(ids[:k], skip_special_tokens=True))
        offsets.append((min(previous, end), end))
        previous = max(previous, end)
    return offsets


def token_rewards(tokenizer: Any, ids: Sequence[int], result: ScoredSample | None) -> list[float]:
    """One value per response token ``ids``: §3.1's token rewards where the sample was scored
    (the EOS value on a final EOS), else its 0/1 correctness on the last token, as the
    frameworks' own managers place a scalar."""
    n = len(ids)
    summary = summarize(result) if result is not None else unjudged()
    if result is None or result.reward_spans is None or not summary["scored"]:
        return [0.0] * (n - 1) + [summary["correct"]] if n else []
    ends_with_eos = n > 0 and ids[-1] == tokenizer.eos_token_id
    text_ids = list(ids[:-1]) if ends_with_eos else list(ids)
    text = tokenizer.decode(text_ids, skip_special_tokens=True)
    values = project(result.reward_spans, token_offsets(tokenizer, text_ids, text))
    return values if ends_with_eos else values[:-1]  # the last value is EOS's


def imitation_tokens(tokenizer: Any, result: ScoredSample | None) -> tuple[list[int], list[float]]:
    """The regular sequence (§3.3: the rewrite of a wrong prediction, the prediction itself
    when correct) as the policy's token ids plus EOS, with each token's imitation weight;
    empty for a sample without one (unscored, unjudged)."""
    if result is None or result.edit_spans is None or not result.regular_sequence:
        return [], []
    encoded = encode_output(tokenizer, result.regular_sequence, add_eos=False)
    weights = project(result.edit_spans, list(encoded.offsets))
    return [*encoded.token_ids, tokenizer.eos_token_id], weights
