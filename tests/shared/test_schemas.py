"""Wire schemas: strictness, bounds and bad input (empty, control characters, lone
surrogates, 1 MB text), directly and as the 422 envelope a service returns."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from rlmec.shared.grm_schemas import LocateRequest, RewriteInput, ScoreRequest
from rlmec.shared.schemas import (
    MAX_BATCH,
    MAX_TEXT_CHARS,
    RewardParams,
    Sample,
    ScoredSample,
    TokenRewardsRequest,
    TokenValues,
    check_text,
)

GOOD: dict[str, Any] = {
    "question": "Tom has 3 apples and buys 2. How many?",
    "reference_solution": "3 + 2 = 5\n#### 5",
    "prediction": "3 * 2 = 6\nThe answer is: 6",
}


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[str, str, str]]:
    return [(".".join(map(str, e["loc"])), e["type"], e["msg"]) for e in exc.value.errors()]


def test_a_good_sample_and_its_defaults() -> None:
    sample = Sample(**GOOD)
    assert sample.task == "math" and sample.reference_answer is None and sample.rewrite is None


def test_empty_prediction_is_allowed_and_means_wrong() -> None:
    assert Sample(**{**GOOD, "prediction": ""}).prediction == ""


@pytest.mark.parametrize("field", ["question", "reference_solution"])
def test_empty_question_or_reference_is_rejected(field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Sample(**{**GOOD, field: ""})
    assert _errors(exc)[0][:2] == (field, "string_too_short")


@pytest.mark.parametrize(
    ("text", "code", "index"),
    [
        ("ok\x00bad", "U+0000", 2),
        ("\x1b[31m red", "U+001B", 0),
        ("lone \ud800 surrogate", "U+D800", 5),
    ],
)
def test_control_and_surrogate_characters_name_the_index(text: str, code: str, index: int) -> None:
    with pytest.raises(ValidationError) as exc:
        Sample(**{**GOOD, "prediction": text})
    loc, _, msg = _errors(exc)[0]
    assert loc == "prediction"
    assert f"{code} at index {index}" in msg and "send valid UTF-8 text" in msg


def test_tab_newline_and_carriage_return_are_fine() -> None:
    assert check_text("a\tb\r\nc") == "a\tb\r\nc"
    assert check_text("Café 你好 🙂") == "Café 你好 🙂"


def test_one_megabyte_text_is_rejected_by_max_length() -> None:
    with pytest.raises(ValidationError) as exc:
        Sample(**{**GOOD, "prediction": "x" * 1_000_000})
    loc, kind, msg = _errors(exc)[0]
    assert (loc, kind) == ("prediction", "string_too_long")
    assert str(MAX_TEXT_CHARS) in msg.replace(",", "").replace("_", "")


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError) as exc:
        Sample(**{**GOOD, "predicton": "typo"})
    assert _errors(exc)[0][:2] == ("predicton", "extra_forbidden")


def test_task_must_be_math_or_qa() -> None:
    with pytest.raises(ValidationError) as exc:
        Sample(**{**GOOD, "task": "code"})
    assert _errors(exc)[0][:2] == ("task", "literal_error")


def test_batch_bounds() -> None:
    with pytest.raises(ValidationError):
        TokenRewardsRequest(samples=[])
    with pytest.raises(ValidationError):
        TokenRewardsRequest(samples=[Sample(**GOOD)] * (MAX_BATCH + 1))
    assert len(TokenRewardsRequest(samples=[Sample(**GOOD)]).samples) == 1


def test_token_values_lengths_must_agree() -> None:
    ok = TokenValues(token_ids=[1, 2], tokens=["a", ""], offsets=[(0, 1), (1, 1)], values=[0, 0])
    assert ok.values == [0.0, 0.0]
    with pytest.raises(ValidationError, match="must have the same length"):
        TokenValues(token_ids=[1, 2], tokens=["a"], offsets=[(0, 1)], values=[0.0])


def test_request_fields_are_documented() -> None:
    props = Sample.model_json_schema()["properties"]
    assert [name for name in props if not props[name].get("description")] == []


def test_readers_keep_a_new_reason_as_a_string_and_ignore_new_fields() -> None:
    base = {"status": "unscored", "question": "q", "prediction": "p", "correct": False,
            "predicted_answer": None, "reference_answer": "5"}  # fmt: skip
    assert ScoredSample(**base, reason="grm_out_of_range").reason == "grm_out_of_range"
    newer = ScoredSample.model_validate(
        {**base, "reason": "because", "novel": 1, "params": {"cap": 0.4, "novel_knob": True}}
    )
    assert newer.reason == "because" and newer.params.cap == 0.4
    assert not hasattr(newer, "novel")
    # writers stay strict: a request with a typo is still refused
    with pytest.raises(ValidationError, match=r"extra_forbidden|Extra inputs"):
        RewardParams.model_validate({"cap": 0.4, "novel_knob": True})


def test_grm_inputs_bounds() -> None:
    with pytest.raises(ValidationError):
        RewriteInput(question="q", reference_solution="r", prediction="p", step=-1)
    with pytest.raises(ValidationError):
        LocateRequest(samples=[], max_new_tokens=32)
    with pytest.raises(ValidationError, match="mode='raw' needs a non-empty 'items' list"):
        ScoreRequest(mode="raw")


def test_bad_input_over_http_is_a_422_envelope() -> None:
    """The same schemas behind a route with the services' error handlers: bad input leaves
    as one envelope naming the field, never a 500."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from rlmec.services.common import install_error_handlers

    app = FastAPI()
    install_error_handlers(app)

    @app.post("/echo")
    async def echo(request: TokenRewardsRequest) -> dict[str, int]:
        return {"n": len(request.samples)}

    with TestClient(app) as client:
        assert client.post("/echo", json={"samples": [GOOD]}).json() == {"n": 1}
        cases = {
            "samples.0.reference_solution": {**GOOD, "reference_solution": ""},
            "samples.0.prediction": {**GOOD, "prediction": "bad\u0000"},
        }
        for param, sample in cases.items():
            response = client.post("/echo", json={"samples": [sample]})
            assert response.status_code == 422
            error = response.json()["error"]
            assert error["type"] == "invalid_request" and error["param"] == param
        # A lone surrogate can only arrive as a JSON escape: send the raw bytes.
        body = json.dumps({"samples": [{**GOOD, "prediction": "lone \ud800"}]})
        assert "\\ud800" in body
        raw = client.post("/echo", content=body, headers={"content-type": "application/json"})
        assert raw.status_code == 422
        assert "U+D800 at index 5" in raw.json()["error"]["message"]
        big = client.post("/echo", json={"samples": [{**GOOD, "prediction": "x" * 1_000_000}]})
        assert big.status_code == 422 and big.json()["error"]["code"] == "string_too_long"


@pytest.mark.parametrize(
    ("old", "new", "name"),
    [
        ("rlmec.shared.grm_api", "rlmec.shared.grm_schemas", "ScoreRequest"),
        ("rlmec.shared.queue.models", "rlmec.shared.queue.schemas", "RolloutBatch"),
    ],
)
def test_renamed_schema_modules_still_import_with_a_warning(old: str, new: str, name: str) -> None:
    import importlib
    import sys

    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} is deprecated"):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"threshold": false}', "threshold"),
        ('{"cap": true}', "cap"),
        ('{"floor": "-0.1"}', "floor"),
    ],
)
def test_request_numbers_are_not_coerced_from_booleans_or_strings(body: str, field: str) -> None:
    from pydantic import ValidationError

    from rlmec.shared.schemas import RewardParams

    with pytest.raises(ValidationError) as err:
        RewardParams.model_validate_json(body)
    assert err.value.errors()[0]["loc"] == (field,)
    assert RewardParams.model_validate_json('{"threshold": 1}').threshold == 1.0  # ints are fine


def test_tokenize_add_eos_must_be_a_boolean() -> None:
    from pydantic import ValidationError

    from rlmec.shared.grm_schemas import TokenizeRequest

    with pytest.raises(ValidationError):
        TokenizeRequest.model_validate_json('{"texts": ["a"], "add_eos": 0}')
