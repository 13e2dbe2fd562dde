"""Policy tokenizers registered by the operator (local directories), for the §6 projection.

Loaded once when the pipeline opens (transformers is imported only here, lazily). Each gives
the platform's one output tokenization (:func:`rlmec.shared.tokenization.encode_output`): token
ids, token strings and character offsets of a text, followed by its EOS at
``(len(text), len(text))``, the layout of :class:`rlmec.shared.schemas.TokenValues`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlmec.shared.chat import ChatMarkup
from rlmec.shared.errors import InvalidRequestError
from rlmec.shared.tokenization import OutputTokens, encode_output


class PolicyTokenizer:
    def __init__(self, name: str, tokenizer: Any) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"policy tokenizer {name!r} is not a fast tokenizer; character offsets need a "
                "tokenizer.json (save it with transformers' PreTrainedTokenizerFast)"
            )
        if tokenizer.eos_token_id is None:
            raise ValueError(f"policy tokenizer {name!r} has no EOS token; set eos_token")
        self.name = name
        self._tok = tokenizer
        self._markup: ChatMarkup | None = None

    @classmethod
    def load(cls, name: str, path: Path) -> PolicyTokenizer:
        from transformers import AutoTokenizer  # heavy: only at startup

        return cls(name, AutoTokenizer.from_pretrained(str(path), use_fast=True))

    def special_tokens(self) -> list[str]:
        """The tokenizer's special tokens as text (EOS, BOS, pad, chat-template markers)."""
        return sorted(set(self._tok.all_special_tokens) | set(self._tok.added_tokens_encoder))

    def encode(self, text: str) -> OutputTokens:
        return encode_output(self._tok, text)

    def chat_markup(self) -> ChatMarkup:
        """Where the user's question sits in prompts rendered with this tokenizer's chat
        template (learned once from the template)."""
        if self._markup is None:
            if not getattr(self._tok, "chat_template", None):
                raise InvalidRequestError(
                    f"policy tokenizer {self.name!r} has no chat template, so chat markup cannot "
                    "be removed with it; register the policy's own tokenizer directory",
                    param="chat_template",
                    code="no_chat_template",
                )
            self._markup = ChatMarkup.from_template(
                lambda messages: self._tok.apply_chat_template(
                    list(messages), tokenize=False, add_generation_prompt=True
                )
            )
        return self._markup


class TokenizerRegistry:
    def __init__(self, tokenizers: Mapping[str, PolicyTokenizer]) -> None:
        self._by_name = dict(tokenizers)

    @classmethod
    def load(cls, dirs: Mapping[str, Path]) -> TokenizerRegistry:
        return cls({name: PolicyTokenizer.load(name, path) for name, path in dirs.items()})

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> PolicyTokenizer:
        tokenizer = self._by_name.get(name)
        if tokenizer is None:
            known = ", ".join(self.names) or "none"
            raise InvalidRequestError(
                f"policy_tokenizer {name!r} is not registered (registered: {known}); use one of "
                "them or ask the operator to add it to RLMEC_REWARD_POLICY_TOKENIZERS",
                param="policy_tokenizer",
                code="unknown_policy_tokenizer",
            )
        return tokenizer
