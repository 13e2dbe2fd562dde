"""The straightforward alignment the released RLMEC code used: a full O(n·m) Python table and
a backtrace, turned into §3.3 weights. Kept as the benchmark's baseline and as an independent
check of the edit cost; it marks edits at the very start (the released code skipped them)."""

from __future__ import annotations

from collections.abc import Sequence


def dp_table(pred: Sequence[int], rewrite: Sequence[int]) -> list[list[int]]:
    """``table[i][j]`` = edit distance between ``pred[:i]`` and ``rewrite[:j]``."""
    n, m = len(pred), len(rewrite)
    table = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        table[i][0] = i
    for j in range(m + 1):
        table[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = 0 if pred[i - 1] == rewrite[j - 1] else 1
            table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1, table[i - 1][j - 1] + cost)
    return table


def dp_imitation_weights(
    pred: Sequence[int], rewrite: Sequence[int], *, edited: float = 1.0, kept: float = 0.5
) -> tuple[list[float], int]:
    """§3.3 weights from the backtrace of :func:`dp_table`, and the script's edit cost."""
    table = dp_table(pred, rewrite)
    weights = [kept] * len(rewrite)
    i, j, cost = len(pred), len(rewrite), 0
    while i > 0 or j > 0:
        if i > 0 and j > 0 and pred[i - 1] == rewrite[j - 1] and table[i][j] == table[i - 1][j - 1]:
            i, j = i - 1, j - 1
        elif i > 0 and j > 0 and table[i][j] == table[i - 1][j - 1] + 1:
            weights[j - 1] = edited  # substitution
            i, j, cost = i - 1, j - 1, cost + 1
        elif j > 0 and table[i][j] == table[i][j - 1] + 1:
            weights[j - 1] = edited  # insertion
            j, cost = j - 1, cost + 1
        else:
            if weights:  # deletion: the rewrite token before it, or the first one at the start
                weights[max(j - 1, 0)] = edited
            i, cost = i - 1, cost + 1
    return weights, cost
