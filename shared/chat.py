"""The user's question inside a chat-templated prompt, learned from the template itself.

RL frameworks send the reward service the prompt as the policy saw it: system turn, role
markers, special tokens and the generation prompt included. The GRM must see the problem, not
that markup (method §2.1 puts the question in its own prompt). Rather than knowing each model
family's markers, :class:`ChatMarkup` renders probe conversations through the tokenizer's own
template and reads off the text that opens a user turn and the text between the user's message
and the response.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

Render = Callable[[Sequence[dict[str, str]]], str]
"""Renders messages with the generation prompt, e.g. ``tokenizer.apply_chat_template(messages,
tokenize=False, add_generation_prompt=True)``."""

_Q1, _ANSWER, _Q2 = "rlmec-probe-question-1", "rlmec-probe-answer", "rlmec-probe-question-2"


@dataclass(frozen=True)
class ChatMarkup:
    user_open: str = ""
    """Text right before a user message (role marker, and the previous turn's end)."""
    after_user: str = ""
    """Text between the last user message and the response (turn end + generation prompt)."""

    @classmethod
    def from_template(cls, render: Render) -> ChatMarkup:
        one = render([{"role": "user", "content": _Q1}])
        two = render([
            {"role": "user", "content": _Q1},
            {"role": "assistant", "content": _ANSWER},
            {"role": "user", "content": _Q2},
        ])  # fmt: skip
        if one.count(_Q1) != 1 or _ANSWER not in two or _Q2 not in two:
            raise ValueError("the chat template does not place the messages' text verbatim")
        before, _, after = one.partition(_Q1)
        between = two[two.index(_ANSWER) + len(_ANSWER) : two.index(_Q2)]
        user_open = _common_suffix(before, between)
        if not user_open:
            raise ValueError("the chat template marks no user turn (no text opens it)")
        return cls(user_open=user_open, after_user=after)

    def question(self, prompt: str) -> str | None:
        """The last user message of ``prompt``, or None when ``prompt`` does not carry this
        template's markup (then the caller keeps the prompt as it is)."""
        body = prompt.rstrip()
        tail = self.after_user.rstrip()
        if tail:
            if not body.endswith(tail):
                return None
            body = body[: len(body) - len(tail)]
        start = body.rfind(self.user_open)
        if start < 0:
            return None
        question = body[start + len(self.user_open) :].strip()
        return question or None


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return a[len(a) - n :]
