"""The user's question out of chat-templated prompts, learned from real chat templates."""

from __future__ import annotations

from collections.abc import Sequence

import jinja2
import pytest

from rlmec.shared.chat import ChatMarkup

# SmolLM2-Instruct's template (ChatML with a default system turn), as its GGUF file ships it.
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Llama 3's shape: BOS, header tokens around the role, <|eot_id|> after each turn.
LLAMA3 = (
    "{{ '<|begin_of_text|>' }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}"
    "<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
# The tests' tiny model's template: no turn end at all.
TINY = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if not loop.last %}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}\n<|assistant|>{% endif %}"
)
QUESTION = "Natalia sold 48 clips in April and half as many in May.\nHow many in total?"


def renderer(template: str):  # type: ignore[no-untyped-def]
    compiled = jinja2.Template(template)

    def render(messages: Sequence[dict[str, str]]) -> str:
        return compiled.render(messages=list(messages), add_generation_prompt=True)

    return render


@pytest.mark.parametrize("template", [SMOLLM2, LLAMA3, TINY], ids=["smollm2", "llama3", "tiny"])
def test_the_question_comes_out_of_every_shape(template: str) -> None:
    render = renderer(template)
    markup = ChatMarkup.from_template(render)
    alone = render([{"role": "user", "content": QUESTION}])
    with_system = render([
        {"role": "system", "content": "Reason step by step."},
        {"role": "user", "content": QUESTION},
    ])  # fmt: skip
    multi_turn = render([
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": QUESTION},
    ])  # fmt: skip
    for prompt in (alone, with_system, multi_turn):
        assert markup.question(prompt) == QUESTION


def test_a_prompt_without_the_markup_is_left_alone() -> None:
    markup = ChatMarkup.from_template(renderer(SMOLLM2))
    assert markup.question(QUESTION) is None
    assert markup.question("<|user|>" + QUESTION + "\n<|assistant|>") is None  # another model's


def test_a_template_that_drops_the_content_is_refused() -> None:
    with pytest.raises(ValueError, match="verbatim"):
        ChatMarkup.from_template(lambda messages: "<|assistant|>")
