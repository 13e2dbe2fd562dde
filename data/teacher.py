"""A strong teacher locates and minimally rewrites the policy's wrong solutions (``rlmec data
distill``, method §1 step 2, §2.2).

For each wrong record: the *locate* chat (one worked example of the task type first, as the
paper did), its reply read by the §2.4 parser; then the *rewrite* chat with the assistant turn
prefilled by ``Correct prediction: {prefix}``; the rewrite is ``prefix + "\\n" + completion``
and is kept only if its final answer matches the reference (§4). Two protocols, through their
official SDKs (retries with backoff that honour ``Retry-After``, timeouts, typed errors):

- ``openai``: any OpenAI-compatible ``/v1/chat/completions``. The prefill is continued with
  vLLM's ``continue_final_message``; a server that restates the prefill instead is handled.
- ``anthropic``: any Anthropic-style ``/v1/messages`` (a trailing assistant turn is a prefill
  there by definition).

One base-URL rule for both protocols: the server's root or its ``/v1`` (``teacher_urls``).
Before the first record, ``GET /v1/models`` (:func:`preflight`) turns the common mistakes (a
wrong key, a model the server does not serve, a wrong URL, a server that is down) into one
line naming the URL, the key's variable and the served models; a 4xx during the run does too.

A teacher that stays unreachable or saturated after the SDK's retries leaves the record
*deferred*: nothing is written for it, and a rerun picks it up. Only the teacher's answers
(unreadable, no step, a rewrite that misses the reference) drop a record, with the reason.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from rlmec.data.records import GrmRecord
from rlmec.shared.answers import AnswerCheck
from rlmec.shared.checking import AnswerChecker
from rlmec.shared.prompts import (
    LOCATE_TARGET,
    ChatMessage,
    TaskType,
    join_rewrite,
    parse_located_step,
    rewrite_prefix,
    split_steps,
    teacher_locate_messages,
    teacher_rewrite_messages,
)

Protocol_ = Literal["openai", "anthropic"]

# One worked example per task type (method §2.2: the paper put one before each request). Ours,
# written for this project: a GSM8K-style problem and an ECQA-style question.
_EXAMPLES: dict[TaskType, dict[str, Any]] = {
    "math": {
        "question": "A baker made 24 muffins and sold 3/4 of them. He baked 10 more. How many "
        "muffins does he have now?",
        "reference": "He sold 24 * 3/4 = <<24*3/4=18>>18 muffins.\nHe had 24 - 18 = "
        "<<24-18=6>>6 left.\nAfter baking he has 6 + 10 = <<6+10=16>>16 muffins.\n#### 16",
        "prediction": "He sold 24 * 3/4 = 18 muffins.\nHe had 24 - 18 = 8 left.\nAfter baking "
        "he has 8 + 10 = 18 muffins.\nThe answer is: 18",
        "step": 1,
        "rewrite": "He had 24 - 18 = 6 left.\nAfter baking he has 6 + 10 = 16 muffins.\nThe "
        "answer is: 16",
    },
    "qa": {
        "question": "Where would you keep a cold drink before a picnic?\nOptions:\noven\n"
        "refrigerator\ncupboard\ngarden\nattic",
        "reference": "A cold drink has to stay cold.\nA refrigerator keeps things cold.\nThe "
        "answer is refrigerator",
        "prediction": "A cold drink has to stay cold.\nA cupboard keeps things away from "
        "light.\nThe answer is cupboard",
        "step": 1,
        "rewrite": "A refrigerator keeps things cold.\nThe answer is refrigerator",
    },
}


def worked_examples(task_type: TaskType) -> tuple[list[ChatMessage], list[ChatMessage]]:
    """(locate turns, rewrite turns) of the task type's worked example."""
    ex = _EXAMPLES[task_type]
    locate = teacher_locate_messages(ex["question"], ex["reference"], ex["prediction"])
    locate.append({"role": "assistant", "content": LOCATE_TARGET.format(step=ex["step"])})
    rewrite = teacher_rewrite_messages(
        ex["question"], ex["reference"], ex["prediction"], ex["step"]
    )
    rewrite[-1] = {"role": "assistant", "content": rewrite[-1]["content"] + "\n" + ex["rewrite"]}
    return locate, rewrite


@dataclass(frozen=True)
class Reply:
    text: str
    input_tokens: int
    output_tokens: int


class TeacherUnavailable(Exception):
    """The teacher stayed unreachable, saturated or failing after the SDK's retries."""


class Teacher(Protocol):
    model: str

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int) -> Reply: ...

    async def close(self) -> None: ...


class TeacherRefused(ValueError):
    """The teacher's endpoint refuses the requests themselves (key, model, URL): no retry or
    rerun helps until the command changes. The message says what to change."""


def teacher_urls(base_url: str) -> tuple[str, str]:
    """(root, root + "/v1") of a base URL given with or without ``/v1``: the OpenAI SDK takes
    the second, the Anthropic SDK the first (it adds ``/v1/messages`` itself)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    return root, f"{root}/v1"


async def preflight(base_url: str, model: str, api_key: str, key_env: str,
                    timeout: float = 20.0) -> None:  # fmt: skip
    """``GET /v1/models`` before any record: :class:`TeacherRefused` naming the fix for a
    refused key, a wrong URL, a server that is down, or a model it does not serve."""
    import httpx

    root, v1 = teacher_urls(base_url)
    headers = {"Authorization": f"Bearer {api_key}", "x-api-key": api_key,
               "anthropic-version": "2023-06-01"}  # fmt: skip
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            resp = await client.get(f"{v1}/models", headers=headers)
    except httpx.HTTPError as exc:
        raise TeacherRefused(
            f"cannot reach the teacher at {root} ({type(exc).__name__}); is the server "
            "running, and is --url its address?"
        ) from exc
    if resp.status_code in (401, 403):
        raise TeacherRefused(
            f"the teacher at {root} refused the key in ${key_env} (HTTP {resp.status_code}); "
            f"set ${key_env} to a valid key, or name another variable with --api-key-env"
        )
    if resp.status_code == 404:
        raise TeacherRefused(
            f"{v1}/models is not found (HTTP 404): --url must be the server's root or its "
            "/v1, e.g. http://127.0.0.1:8000/v1"
        )
    served = _model_ids(resp)
    if served is not None and model not in served:
        raise TeacherRefused(
            f"the teacher at {root} does not serve model {model!r}; it serves: "
            f"{', '.join(served) or 'nothing'} (--teacher-model)"
        )


def _model_ids(resp: Any) -> list[str] | None:
    """The ids of a ``/v1/models`` listing (OpenAI's and Anthropic's shape), or None when the
    server answers something else (then the first call tells)."""
    try:
        return [str(m["id"]) for m in resp.json()["data"]] if resp.is_success else None
    except (ValueError, KeyError, TypeError):
        return None


def _refused(exc: Any, model: str) -> TeacherRefused:
    status = getattr(exc, "status_code", "?")
    return TeacherRefused(
        f"the teacher refused a request for model {model!r} (HTTP {status}: "
        f"{str(exc)[:200]}); check --teacher-model, --url and the key"
    )


class OpenAITeacher:
    def __init__(self, base_url: str, model: str, *, api_key: str, timeout: float,
                 max_retries: int, continue_prefill: bool = True) -> None:  # fmt: skip
        import openai

        self.model = model
        self._errors = _transient(openai)
        self._continue = continue_prefill
        self._refused = openai.APIStatusError
        self._client = openai.AsyncOpenAI(
            base_url=teacher_urls(base_url)[1], api_key=api_key, timeout=timeout,
            max_retries=max_retries,
        )  # fmt: skip

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int) -> Reply:
        extra: dict[str, Any] = {}
        if self._continue and messages[-1]["role"] == "assistant":
            extra = {"continue_final_message": True, "add_generation_prompt": False}
        try:
            out = await self._client.chat.completions.create(
                model=self.model, messages=messages,  # type: ignore[arg-type]
                temperature=0.0, max_tokens=max_tokens, extra_body=extra or None,
            )  # fmt: skip
        except self._errors as exc:
            raise TeacherUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except self._refused as exc:  # 4xx other than 429: the request itself is wrong
            raise _refused(exc, self.model) from exc
        usage = out.usage
        text = out.choices[0].message.content if out.choices else ""
        return Reply(text or "", usage.prompt_tokens if usage else 0,
                     usage.completion_tokens if usage else 0)  # fmt: skip

    async def close(self) -> None:
        await self._client.close()


class AnthropicTeacher:
    """The Messages API. This SDK has no ``temperature`` argument (the API sets sampling); an
    endpoint that takes one (vLLM's ``/v1/messages``) gets it through ``extra_body``."""

    def __init__(self, base_url: str, model: str, *, api_key: str, timeout: float,
                 max_retries: int, extra_body: dict[str, Any] | None = None) -> None:  # fmt: skip
        import anthropic

        self.model = model
        self._extra = extra_body or None
        self._errors = _transient(anthropic)
        self._refused = anthropic.APIStatusError
        self._client = anthropic.AsyncAnthropic(
            base_url=teacher_urls(base_url)[0], api_key=api_key, timeout=timeout,
            max_retries=max_retries,
        )  # fmt: skip

    async def complete(self, messages: list[ChatMessage], *, max_tokens: int) -> Reply:
        try:
            out = await self._client.messages.create(
                model=self.model, messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens, extra_body=self._extra,
            )  # fmt: skip
        except self._errors as exc:
            raise TeacherUnavailable(f"{type(exc).__name__}: {exc}") from exc
        except self._refused as exc:
            raise _refused(exc, self.model) from exc
        text = "".join(getattr(block, "text", "") for block in out.content)
        return Reply(text, out.usage.input_tokens, out.usage.output_tokens)

    async def close(self) -> None:
        await self._client.close()


def _transient(sdk: Any) -> tuple[type[Exception], ...]:
    """The SDK's errors that say "later", not "never": after its own retries they defer."""
    return (sdk.RateLimitError, sdk.APIConnectionError, sdk.InternalServerError)


@dataclass
class DistillStats:
    outcomes: Counter[str] = field(default_factory=Counter)
    last_error: str = ""  # of a deferred record, for the message
    input_tokens: int = 0
    output_tokens: int = 0

    def cost(self, price_in: float, price_out: float) -> float:
        """Estimated cost for prices per million input / output tokens."""
        return (self.input_tokens * price_in + self.output_tokens * price_out) / 1e6


async def distill_one(
    teacher: Teacher, checker: AnswerChecker, record: GrmRecord, stats: DistillStats,
    *, max_tokens: int,
) -> GrmRecord:  # fmt: skip
    """The record with the teacher's step and rewrite, kept or dropped (with the reason)."""
    locate_ex, rewrite_ex = worked_examples(record.task_type)
    q, ref, pred = record.question, record.reference_solution, record.prediction
    located = await _ask(teacher, teacher_locate_messages(q, ref, pred, locate_ex), stats, 64)
    parsed = parse_located_step(located.text, len(split_steps(pred)))
    meta = {**record.meta, "teacher": teacher.model, "locate_reply": located.text}
    if parsed.status != "located" or parsed.step is None:
        return _verdict(record, "dropped", f"teacher_{parsed.status}", meta)
    prefill = f"Correct prediction: {rewrite_prefix(pred, parsed.step)}"
    messages = teacher_rewrite_messages(q, ref, pred, parsed.step, rewrite_ex)
    reply = await _ask(teacher, messages, stats, max_tokens)
    # A server that restates the prefill (no continuation support) repeats it: drop that.
    continuation = reply.text.removeprefix(prefill).strip("\n").rstrip()
    rewrite = join_rewrite(rewrite_prefix(pred, parsed.step), continuation)
    (check,) = await checker.check_many([(rewrite, record.reference_answer, record.task_type)])
    ok = isinstance(check, AnswerCheck) and check.correct
    out = record.model_copy(update={"error_step": parsed.step, "rewrite": rewrite})
    reason = "rewrite_reaches_reference" if ok else "rewrite_incorrect"
    return _verdict(out, "accepted" if ok else "dropped", reason, meta)


async def _ask(teacher: Teacher, messages: list[ChatMessage], stats: DistillStats,
               max_tokens: int) -> Reply:  # fmt: skip
    reply = await teacher.complete(messages, max_tokens=max_tokens)
    stats.input_tokens += reply.input_tokens
    stats.output_tokens += reply.output_tokens
    return reply


def _verdict(record: GrmRecord, verdict: Literal["accepted", "dropped"], reason: str,
             meta: dict[str, Any]) -> GrmRecord:  # fmt: skip
    return record.model_copy(
        update={"source": "teacher", "verdict": verdict, "reason": reason, "meta": meta}
    )


async def distill_many(
    teacher: Teacher, checker: AnswerChecker, records: list[GrmRecord], stats: DistillStats,
    *, concurrency: int, max_tokens: int,
) -> list[GrmRecord]:  # fmt: skip
    """Distil ``records`` with at most ``concurrency`` teacher calls in flight; the deferred
    ones (teacher unavailable) are left out of the result and counted."""
    gate = asyncio.Semaphore(concurrency)

    async def one(record: GrmRecord) -> GrmRecord | None:
        async with gate:
            try:
                return await distill_one(teacher, checker, record, stats, max_tokens=max_tokens)
            except TeacherUnavailable as exc:
                stats.outcomes["deferred (teacher unavailable; rerun)"] += 1
                stats.last_error = str(exc)[:300]
                return None

    done = await asyncio.gather(*(one(r) for r in records))
    kept = [r for r in done if r is not None]
    stats.outcomes.update(f"{r.verdict}: {r.reason}" for r in kept)
    return kept
