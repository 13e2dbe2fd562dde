"""§3.3 imitation weights from a minimum-cost token edit script (python-Levenshtein, C speed).

The released code walked an O(n·m) Python table and skipped edits before the first aligned
token (a defect); here the script comes from ``Levenshtein.opcodes`` on token-id lists, any
minimum-cost script being acceptable (§3.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import Levenshtein

EDITED = 1.0
KEPT = 0.5


def edit_flags(prediction_ids: Sequence[int], rewrite_ids: Sequence[int]) -> list[bool]:
    """For each rewrite token: True when it was inserted or substituted, when it is the token
    just before a pure deletion, or (deletion at the very start) the first rewrite token."""
    flags = [False] * len(rewrite_ids)
    if not flags:
        return flags
    for tag, _i1, _i2, j1, j2 in Levenshtein.opcodes(list(prediction_ids), list(rewrite_ids)):
        if tag in ("replace", "insert"):
            flags[j1:j2] = [True] * (j2 - j1)
        elif tag == "delete":
            flags[max(j1 - 1, 0)] = True
    return flags


def not_kept(prediction_ids: Sequence[int], rewrite_ids: Sequence[int]) -> list[bool]:
    """For each prediction token: True where the rewrite does not keep it (the script from the
    rewrite to the prediction inserts or replaces it, or a deletion follows it): the tokens a
    minimal edit changes, read from the prediction's side."""
    return edit_flags(rewrite_ids, prediction_ids)


def imitation_weights(
    prediction_ids: Sequence[int],
    rewrite_ids: Sequence[int],
    *,
    edited: float = EDITED,
    kept: float = KEPT,
) -> list[float]:
    """One weight per rewrite token: ``edited`` (1.0) where :func:`edit_flags` is set, else
    ``kept`` (0.5). For a correct prediction the rewrite is the prediction: all 0.5."""
    return [edited if f else kept for f in edit_flags(prediction_ids, rewrite_ids)]


def edit_distance(prediction_ids: Sequence[int], rewrite_ids: Sequence[int]) -> int:
    return int(Levenshtein.distance(list(prediction_ids), list(rewrite_ids)))
