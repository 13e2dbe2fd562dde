"""Chat markup found in a sample's text (the pure part of the ``chat_markup`` refusal)."""

from __future__ import annotations

from rlmec.services.reward.markup import find_markup, markup_message
from rlmec.shared.schemas import Sample


def test_generic_and_tokenizer_special_tokens_are_found_first_come_first() -> None:
    assert find_markup("6<|im_end|>") == "<|im_end|>"
    assert find_markup("a </s> b <|eot_id|>", ["</s>"]) == "</s>"
    assert find_markup("a <|eot_id|> b </s>", ["</s>"]) == "<|eot_id|>"


def test_plain_text_and_look_alikes_are_not_markup() -> None:
    assert find_markup("3 < 4 and 5 | 6 > 2; x <| y |> z") is None
    assert find_markup("if a < b then </s>", []) is None  # only a tokenizer's own tokens
    assert find_markup("text", [" ", ""]) is None  # blank special tokens never match


def test_the_message_names_field_token_and_fix_and_prompt_is_exempt() -> None:
    base = {"question": "What is 2 + 3?", "reference_solution": "2 + 3 = 5", "prediction": "5"}
    assert markup_message(Sample(**base, prompt="<|im_start|>user\nWhat is 2 + 3?")) is None
    message = markup_message(Sample(**{**base, "prediction": "5<|im_end|>"}))
    assert message is not None and message.startswith("prediction contains '<|im_end|>'")
    assert "skip_special_tokens=True" in message
