"""The one output tokenization of the platform (method §3.1, §5, §6).

A response ("output") is tokenized alone, without the tokenizer's special tokens, then EOS is
appended at the character offsets ``(len(text), len(text))``. The GRM service scores and
tokenizes outputs this way, the reward service projects onto policy tokenizers this way, and the
trainer builds its loss mask this way, so token ``i`` means the same thing in all three.
No heavy import: ``tokenizer`` is any Hugging Face fast tokenizer (duck-typed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Offsets = list[tuple[int, int]]


@dataclass(frozen=True)
class OutputTokens:
    """``token_ids``, ``tokens`` and ``offsets`` are aligned (one entry a token, EOS last when
    ``has_eos``); offsets index the output text."""

    token_ids: list[int]
    tokens: list[str]
    offsets: Offsets
    has_eos: bool

    @property
    def text_offsets(self) -> Offsets:
        """Offsets of the text tokens alone (EOS left out), as §6 projection takes them."""
        return self.offsets[:-1] if self.has_eos else self.offsets


def encode_output(tokenizer: Any, text: str, *, add_eos: bool = True) -> OutputTokens:
    """Tokenize a response the one way every part expects (see the module docstring)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in enc["input_ids"]]
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    if add_eos:
        ids.append(int(tokenizer.eos_token_id))
        offsets.append((len(text), len(text)))
    tokens = [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]
    return OutputTokens(ids, tokens, offsets, add_eos)
