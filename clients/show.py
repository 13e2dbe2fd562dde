"""``rlmec client show``: scored results in a terminal, the way a researcher checks a reward.

Each result shows its prediction with every token coloured by its reward (red: the tokens the
GRM would not keep, a deeper red for a lower reward; green: a correct answer's kept tokens), the
GRM's rewrite as a word diff against the prediction with the located step marked, and for an
unscored sample its reason and message. Input: the JSONL that ``rlmec client score``, ``rlmec
client result`` or ``rlmec data signals`` write (one ScoredSample per line).
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from rlmec.shared.schemas import ScoredSample, TokenValues

KINDS = ("wrong", "correct", "unscored")


def kind(result: ScoredSample) -> str:
    if result.status == "unscored":
        return "unscored"
    return "correct" if result.correct else "wrong"


def _shade(value: float, floor: float, cap: float) -> str:
    """A background whose depth grows with |value|: red below 0, green above."""
    if value < 0:
        depth = min(value / floor, 1.0) if floor < 0 else 1.0
        return f"on rgb({120 + int(135 * depth)},{60 - int(40 * depth)},{60 - int(40 * depth)})"
    depth = min(value / cap, 1.0) if cap > 0 else 1.0
    return f"on rgb(20,{80 + int(100 * depth)},40)"


def token_text(prediction: str, values: TokenValues, floor: float = -0.1,
               cap: float = 0.5) -> Text:  # fmt: skip
    """The prediction with each token's characters styled by its value (0 is unstyled; EOS,
    which has no characters, is left out)."""
    text = Text(prediction)
    for (start, end), value in zip(values.offsets, values.values, strict=True):
        if end > start and value != 0:
            text.stylize(_shade(value, floor, cap), start, end)
    return text


def penalised(prediction: str, values: TokenValues) -> list[tuple[str, float]]:
    """(token text, reward) of every token below 0, EOS as ``<eos>``."""
    return [
        (prediction[start:end] or "<eos>", value)
        for (start, end), value in zip(values.offsets, values.values, strict=True)
        if value < 0
    ]


def rewrite_diff(prediction: str, rewrite: str, located_step: int | None, *,
                 marks: bool = False) -> Text:  # fmt: skip
    """The rewrite against the prediction, word by word (removed: red, struck; added: green;
    with ``marks``, for output without colour, also ``[-removed-]{+added+}`` as ``git diff
    --word-diff`` writes them), one line per step, the located step marked with ``>``."""
    out = Text()
    old_lines, new_lines = prediction.split("\n"), rewrite.split("\n")
    for i in range(max(len(old_lines), len(new_lines))):
        old = old_lines[i] if i < len(old_lines) else ""
        new = new_lines[i] if i < len(new_lines) else ""
        out.append("> " if i == located_step else "  ", style="bold yellow")
        out.append_text(_word_diff(old, new, marks))
        out.append("\n")
    out.rstrip()
    return out


def _word_diff(old: str, new: str, marks: bool) -> Text:
    a, b = re.findall(r"\s+|\S+", old), re.findall(r"\s+|\S+", new)
    text = Text()
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            text.append("".join(a[i1:i2]))
            continue
        removed, added = "".join(a[i1:i2]), "".join(b[j1:j2])
        if marks:
            removed, added = removed and f"[-{removed}-]", added and f"{{+{added}+}}"
        text.append(removed, style="red strike")
        text.append(added, style="bold green")
    return text


def render(result: ScoredSample, *, policy: bool = False, marks: bool = False) -> RenderableType:
    """One result as a panel: header, coloured prediction, rewrite diff or unscored reason."""
    k = kind(result)
    colour = {"wrong": "red", "correct": "green", "unscored": "yellow"}[k]
    answers = f"answer {result.predicted_answer!r}, reference {result.reference_answer!r}"
    title = Text.assemble((k, f"bold {colour}"), f"  {result.id or ''}  {answers}")
    parts: list[RenderableType] = [Text(result.question, style="dim")]
    values = result.rewards
    if policy and result.policy is not None:
        values = result.policy.rewards
    if result.status == "unscored":
        parts += [Text(result.prediction),
                  Text.assemble((f"unscored: {result.reason}", "bold yellow"),
                                f" {result.message or ''}")]  # fmt: skip
    elif values is not None:
        p = result.params
        parts.append(token_text(result.prediction, values, p.floor, p.cap))
        bad = penalised(result.prediction, values)
        if bad:
            listed = ", ".join(f"{tok!r} {v:+.2f}" for tok, v in bad[:12])
            more = f" and {len(bad) - 12} more" if len(bad) > 12 else ""
            parts.append(Text(f"penalised: {listed}{more}", style="red"))
    if result.rewrite is not None and k != "correct":
        step = "" if result.located_step is None else f" (located step {result.located_step})"
        parts += [Text(f"GRM rewrite{step}:", style="bold"),
                  rewrite_diff(result.prediction, result.rewrite, result.located_step,
                               marks=marks)]  # fmt: skip
    return Panel(Group(*parts), title=title, title_align="left", border_style=colour)


def select(results: Iterable[ScoredSample], *, only: Sequence[str] = KINDS,
           reason: str | None = None, ids: Sequence[str] = ()) -> list[ScoredSample]:  # fmt: skip
    return [
        r
        for r in results
        if kind(r) in only and (reason is None or r.reason == reason) and (not ids or r.id in ids)
    ]


def summary(results: Sequence[ScoredSample]) -> Text:
    kinds = Counter(kind(r) for r in results)
    reasons = Counter(r.reason for r in results if r.reason)
    line = ", ".join(f"{kinds[k]} {k}" for k in KINDS)
    if reasons:
        line += " (" + ", ".join(f"{n} {why}" for why, n in reasons.most_common()) + ")"
    return Text(f"{len(results)} results: {line}", style="bold")


def show(console: Console, results: Sequence[ScoredSample], shown: Sequence[ScoredSample], *,
         policy: bool = False) -> None:  # fmt: skip
    marks = console.no_color or console.color_system is None  # a pipe or NO_COLOR
    for result in shown:
        console.print(render(result, policy=policy, marks=marks))
    console.print(summary(results))
    if len(shown) < len(results):
        console.print(f"shown: {len(shown)} (--only, --reason, --id and --limit choose)")
