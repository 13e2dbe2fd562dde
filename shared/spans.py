"""§6 character-span values and their projection onto any tokenizer's offsets.

Token values become values over character spans of the text (tokenizer-free), and go back onto
another tokenizer's tokens by offsets. With the same offsets the projection is the identity.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence

from rlmec.shared.schemas import Span, SpanValues

Offsets = Sequence[tuple[int, int]]


def to_spans(offsets: Offsets, values: Sequence[float]) -> SpanValues:
    """Token values (text tokens then EOS, as in :class:`TokenValues`) to span values."""
    if len(offsets) != len(values) or not values:
        raise ValueError(
            f"offsets ({len(offsets)}) and values ({len(values)}) must be non-empty and of "
            "equal length, EOS last"
        )
    spans = [
        Span(start=s, end=e, value=v) for (s, e), v in zip(offsets[:-1], values[:-1], strict=True)
    ]
    return SpanValues(spans=spans, eos=values[-1])


def _strongest(values: Sequence[float]) -> float:
    """The value of largest magnitude (first on ties): a target token touching a penalised
    character is penalised, one touching an edited character is imitated with weight 1."""
    return max(values, key=abs)


def project(span_values: SpanValues, offsets: Offsets) -> list[float]:
    """Values for target tokens with ``offsets`` (text tokens only), then the EOS value.

    A target token whose offsets equal the next unused source span takes its value (so the
    same tokenizer gives back exactly the token values, even for byte tokens that share a
    character); otherwise the strongest value among the spans it overlaps; a token overlapping
    none (e.g. whitespace a tokenizer leaves out of its offsets) takes the nearest span's value.
    Offsets must be non-decreasing, as every tokenizer emits them.
    """
    src = span_values.spans
    if not src:
        return [span_values.eos] * len(offsets) + [span_values.eos]
    starts = [s.start for s in src]
    ends = [s.end for s in src]
    out: list[float] = []
    cursor = 0
    for start, end in offsets:
        if cursor < len(src) and (src[cursor].start, src[cursor].end) == (start, end):
            out.append(src[cursor].value)
            cursor += 1
            continue
        first = bisect_right(ends, start)
        last = bisect_left(starts, end) if end > start else bisect_right(starts, start)
        if first < last:
            out.append(_strongest([s.value for s in src[first:last]]))
            cursor = last
        else:
            out.append(src[min(first, len(src) - 1)].value)
    out.append(span_values.eos)
    return out
