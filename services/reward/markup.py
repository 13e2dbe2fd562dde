"""Chat markup in a sample's text (issue 30): a question or prediction that still carries a chat
template's markup or a special token (``<|im_end|>``, ``</s>``) would be scored as if it were
solution text (an answer read as ``"6<|im_end|>"``, two EOS tokens). Such a sample is refused
with reason ``chat_markup`` and a message naming the token and the fix, never scored silently.
``prompt`` is exempt: it is the exact policy prompt, chat template included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rlmec.shared.schemas import Sample

# The special-token spelling of ChatML-style templates (<|im_start|>, <|eot_id|>, ...), found
# with or without a registered tokenizer; a policy tokenizer adds its own (</s>, <eos>, ...).
GENERIC_SPECIAL = re.compile(r"<\|[^<>|\s]{1,64}\|>")


def find_markup(text: str, specials: Iterable[str] = ()) -> str | None:
    """The first special token in ``text`` (generic ``<|...|>`` or one of ``specials``)."""
    found = GENERIC_SPECIAL.search(text)
    hits = [(found.start(), found.group())] if found else []
    hits += [(text.find(s), s) for s in specials if s.strip() and s in text]
    return min(hits)[1] if hits else None


def markup_message(sample: Sample, specials: Iterable[str] = ()) -> str | None:
    """Why ``sample`` cannot be scored as sent, or None when its text is plain."""
    specials = tuple(specials)
    for field, text in (("prediction", sample.prediction), ("question", sample.question)):
        token = find_markup(text, specials)
        if token is not None:
            return (
                f"{field} contains {token!r}, chat markup or a special token: send plain text, "
                "the response decoded without special tokens (skip_special_tokens=True; the EOS "
                "reward is added at the end) and the user's question without the chat template "
                "(the exact templated prompt may go in 'prompt')"
            )
    return None
