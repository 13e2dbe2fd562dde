"""§6 span values and their projection onto a tokenizer's offsets: identity with the GRM's own
tokenizer (byte-level tokens that share a character included), sensible values elsewhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlmec.shared.schemas import Span, SpanValues
from rlmec.shared.spans import project, to_spans

TEXTS = [
    "Natalia sold 48/2 = 24 clips in May.\nThe answer is: 72",
    "Café crème, naïve façade: 5 €.",
    "你好, 世界! 2 + 2 = 4",
    "Emoji 🙂👍🏽 and flags 🇫🇷 then 🧮=12",
    "  leading spaces\n\n\ttabs and trailing  ",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _offsets(tokenizer: Any, text: str) -> list[tuple[int, int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [tuple(o) for o in enc["offset_mapping"]]


def _values(n: int) -> list[float]:
    """Distinct values so a token taking its neighbour's value would show."""
    return [round(-0.1 + 0.6 * k / max(n, 1), 6) for k in range(n)]


@pytest.mark.parametrize("text", TEXTS)
def test_projection_with_the_same_tokenizer_is_the_identity(tokenizer: Any, text: str) -> None:
    offsets = _offsets(tokenizer, text)
    values = _values(len(offsets) + 1)  # text tokens, then EOS
    spans = to_spans([*offsets, (len(text), len(text))], values)
    assert project(spans, offsets) == values


def test_multibyte_characters_really_share_offsets(tokenizer: Any) -> None:
    # Guards the test above: byte-level BPE splits 🙂 into several tokens over one character.
    offsets = _offsets(tokenizer, "🙂")
    assert len(offsets) > 1 and len(set(offsets)) == 1


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_projection_identity_property(tokenizer: Any, text: str) -> None:
    offsets = _offsets(tokenizer, text)
    values = _values(len(offsets) + 1)
    spans = to_spans([*offsets, (len(text), len(text))], values)
    assert project(spans, offsets) == values


def _word_offsets(text: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


def test_projection_onto_a_whitespace_tokenizer(tokenizer: Any) -> None:
    text = "Natalia sold 48+24 = 48 clips.\nThe answer is: 48"
    offsets = _offsets(tokenizer, text)
    # Penalise the GRM tokens inside the last "48" only; EOS carries its own value.
    last = text.rindex("48")
    values = [-0.1 if s < last + 2 and e > last else 0.0 for s, e in offsets] + [-0.05]
    assert -0.1 in values
    projected = project(to_spans([*offsets, (len(text), len(text))], values), _word_offsets(text))
    words = text.split()
    assert len(projected) == len(words) + 1
    assert projected[-1] == -0.05
    assert [w for w, v in zip(words, projected[:-1], strict=True) if v == -0.1] == ["48"]
    assert projected.index(-0.1) == len(words) - 1


def test_projection_onto_characters_and_coarser_tokens() -> None:
    # Source: "ab cd" as tokens "ab", " cd" with values 0.5, -0.1.
    spans = SpanValues(spans=[Span(start=0, end=2, value=0.5), Span(start=2, end=5, value=-0.1)],
                       eos=0.2)  # fmt: skip
    chars = [(i, i + 1) for i in range(5)]
    assert project(spans, chars) == [0.5, 0.5, -0.1, -0.1, -0.1, 0.2]
    # A coarser token spanning both takes the value of largest magnitude.
    assert project(spans, [(0, 5)]) == [0.5, 0.2]
    # Zero-width and out-of-text tokens take the nearest span's value.
    assert project(spans, [(0, 0), (7, 9)]) == [0.5, -0.1, 0.2]


def test_projection_of_no_spans_gives_the_eos_value() -> None:
    assert project(SpanValues(spans=[], eos=0.3), [(0, 1), (1, 2)]) == [0.3, 0.3, 0.3]


def test_to_spans_keeps_eos_apart() -> None:
    spans = to_spans([(0, 2), (2, 5), (5, 5)], [0.1, 0.2, 0.3])
    assert spans.eos == 0.3
    assert [(s.start, s.end, s.value) for s in spans.spans] == [(0, 2, 0.1), (2, 5, 0.2)]


@pytest.mark.parametrize(
    ("offsets", "values"), [([(0, 1)], [0.1, 0.2]), ([], []), ([(0, 1), (1, 1)], [0.1])]
)
def test_to_spans_rejects_mismatched_lengths(
    offsets: list[tuple[int, int]], values: list[float]
) -> None:
    with pytest.raises(ValueError, match="must be non-empty and of equal length, EOS last"):
        to_spans(offsets, values)
