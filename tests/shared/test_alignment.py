"""§3.3 imitation weights: worked examples and hypothesis properties of the edit alignment."""

from __future__ import annotations

from pathlib import Path

import Levenshtein
from hypothesis import given, settings
from hypothesis import strategies as st

from rlmec.shared.alignment import (
    EDITED,
    KEPT,
    edit_distance,
    edit_flags,
    imitation_weights,
    not_kept,
)

PREDICTION = (
    "Natalia sold 48/2 = 24 clips in May.\n"
    "Natalia sold 48+24 = 48 clips altogether in April and May.\n"
    "The answer is: 48"
)
REWRITE = (
    "Natalia sold 48/2 = 24 clips in May.\n"
    "Natalia sold 48+24 = 72 clips altogether in April and May.\n"
    "The answer is: 72"
)


def _dp_distance(a: list[int], b: list[int]) -> int:
    """Textbook O(n·m) edit distance, independent of python-Levenshtein."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _whitespace_ids(*texts: str) -> list[list[int]]:
    vocab: dict[str, int] = {}
    return [[vocab.setdefault(w, len(vocab)) for w in t.split()] for t in texts]


def test_gsm8k_worked_example_whitespace_tokens() -> None:
    pred, rewrite = _whitespace_ids(PREDICTION, REWRITE)
    weights = imitation_weights(pred, rewrite)
    edited = [w for w, weight in zip(REWRITE.split(), weights, strict=True) if weight == EDITED]
    assert edited == ["72", "72"]
    assert weights.count(KEPT) == len(rewrite) - 2
    assert edit_distance(pred, rewrite) == 2


def test_gsm8k_worked_example_real_tokenizer(tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pred = tok(PREDICTION, add_special_tokens=False)["input_ids"]
    enc = tok(REWRITE, add_special_tokens=False, return_offsets_mapping=True)
    weights = imitation_weights(pred, enc["input_ids"])
    assert len(weights) == len(enc["input_ids"])
    offsets = enc["offset_mapping"]
    pairs = zip(offsets, weights, strict=True)
    flagged = "".join(REWRITE[s:e].strip() for (s, e), w in pairs if w == EDITED)
    # Only the two "72"s differ: the flagged tokens spell exactly them, everything else is 0.5.
    assert flagged == "7272"


def test_identical_sequences_weigh_half_everywhere() -> None:
    assert imitation_weights([5, 6, 7], [5, 6, 7]) == [KEPT] * 3


def test_substitution_and_insertion_weigh_one() -> None:
    assert imitation_weights([1, 2, 3], [1, 9, 3]) == [KEPT, EDITED, KEPT]
    assert imitation_weights([1, 2, 3], [1, 2, 8, 8, 3]) == [KEPT, KEPT, EDITED, EDITED, KEPT]


def test_pure_deletion_marks_the_token_before_it() -> None:
    assert imitation_weights([1, 2, 3, 4], [1, 2, 4]) == [KEPT, EDITED, KEPT]
    assert imitation_weights([1, 2, 3, 4, 5], [1, 2, 5]) == [KEPT, EDITED, KEPT]
    assert imitation_weights([1, 2, 3], [1, 2]) == [KEPT, EDITED]


def test_edits_at_the_very_start_are_marked() -> None:
    # The released code skipped edits before the first aligned token (a defect, §3.3).
    assert imitation_weights([9, 1, 2], [1, 2]) == [EDITED, KEPT]
    assert imitation_weights([1, 2], [7, 1, 2]) == [EDITED, KEPT, KEPT]
    assert imitation_weights([9, 2, 3], [8, 2, 3]) == [EDITED, KEPT, KEPT]


def test_empty_sides() -> None:
    assert imitation_weights([1, 2], []) == []
    assert imitation_weights([], [1, 2]) == [EDITED, EDITED]
    assert imitation_weights([], []) == []
    assert edit_flags((1, 2), (1, 2)) == [False, False]


def test_custom_weights() -> None:
    assert imitation_weights([1, 2], [1, 3], edited=2.0, kept=0.0) == [0.0, 2.0]


TOKENS = st.lists(st.integers(min_value=0, max_value=6), max_size=40)


@settings(max_examples=300, deadline=None)
@given(TOKENS, TOKENS)
def test_edit_script_cost_equals_levenshtein_distance(pred: list[int], rewrite: list[int]) -> None:
    ops = Levenshtein.opcodes(pred, rewrite)
    cost = sum(max(i2 - i1, j2 - j1) for tag, i1, i2, j1, j2 in ops if tag != "equal")
    assert cost == edit_distance(pred, rewrite) == _dp_distance(pred, rewrite)


@settings(max_examples=300, deadline=None)
@given(TOKENS, TOKENS)
def test_weights_cover_the_rewrite(pred: list[int], rewrite: list[int]) -> None:
    weights = imitation_weights(pred, rewrite)
    assert len(weights) == len(rewrite)
    assert set(weights) <= {EDITED, KEPT}
    # At least one weight-1 token per edit block, at most one per edited token.
    if rewrite and pred != rewrite:
        assert 1 <= weights.count(EDITED) <= edit_distance(pred, rewrite)


@settings(max_examples=200, deadline=None)
@given(TOKENS)
def test_identical_gives_all_half(tokens: list[int]) -> None:
    assert imitation_weights(tokens, list(tokens)) == [KEPT] * len(tokens)


@st.composite
def _edited_pair(draw: st.DrawFn) -> tuple[list[int], list[int], list[bool]]:
    """A prediction and a rewrite made from it by substituting and inserting *fresh* ids (never
    in the prediction): whatever minimum-cost script is chosen, a fresh token cannot be kept, so
    it must be inserted or substituted and weigh 1.0."""
    pred = draw(st.lists(st.integers(0, 9), max_size=30))
    rewrite: list[int] = []
    fresh: list[bool] = []
    next_fresh = 100
    for token in pred:
        action = draw(st.sampled_from(["keep", "keep", "keep", "sub", "ins", "del"]))
        if action in ("sub", "ins"):
            rewrite.append(next_fresh)
            fresh.append(True)
            next_fresh += 1
        if action in ("keep", "ins"):
            rewrite.append(token)
            fresh.append(False)
    return pred, rewrite, fresh


@settings(max_examples=300, deadline=None)
@given(_edited_pair())
def test_inserted_and_substituted_tokens_weigh_one(
    case: tuple[list[int], list[int], list[bool]],
) -> None:
    pred, rewrite, fresh = case
    weights = imitation_weights(pred, rewrite)
    assert all(w == EDITED for w, is_fresh in zip(weights, fresh, strict=True) if is_fresh)
    for tag, _i1, _i2, j1, j2 in Levenshtein.opcodes(pred, rewrite):
        if tag in ("replace", "insert"):
            assert weights[j1:j2] == [EDITED] * (j2 - j1)
        elif tag == "delete" and rewrite:
            assert weights[max(j1 - 1, 0)] == EDITED


def test_a_token_before_what_the_rewrite_deletes_is_not_kept() -> None:
    """Read from the prediction's side, the rewrite's added ``1`` of ``17`` (a deletion from
    the rewrite to ``7``) flags the prediction token before it, as §3.3 flags the token before
    a deletion; with a word-piece tokenizer ``7`` and ``17`` are one token each (a
    replacement)."""
    pred, rewrite = [ord(c) for c in "= 7."], [ord(c) for c in "= 17."]
    assert not_kept(pred, rewrite) == [False, True, False, False]
