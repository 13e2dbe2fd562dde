"""Every endpoint the SDK speaks, as a :class:`~rlmec.clients._base.Call`: the request body is
built and validated here (bad input fails before the network, naming the field), and the
answer is parsed into the shared wire schemas."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from rlmec.clients._base import Call, dict_parser, model_parser
from rlmec.shared.grm_schemas import (
    AdapterResponse,
    GrmSampleInput,
    LoadAdapterRequest,
    LocateRequest,
    LocateResponse,
    ModelList,
    RewriteInput,
    RewriteRequest,
    RewriteResponse,
    ScoreItem,
    ScoreRequest,
    ScoreResponse,
    TokenizeRequest,
    TokenizeResponse,
)
from rlmec.shared.queue import (
    AckResult,
    BatchStatus,
    PullResponse,
    PushResult,
    ScoredBatch,
    ScoredDelivery,
)
from rlmec.shared.schemas import (
    MAX_BATCH,
    RewardParams,
    Sample,
    TokenRewardsRequest,
    TokenRewardsResponse,
    UsageResponse,
)

SampleLike = Sample | Mapping[str, Any]
ParamsLike = RewardParams | Mapping[str, Any] | None


def _body(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)


def _params(params: ParamsLike) -> RewardParams:
    if params is None:
        return RewardParams()
    return params if isinstance(params, RewardParams) else RewardParams.model_validate(params)


def token_rewards(
    samples: Sequence[SampleLike], params: ParamsLike, policy_tokenizer: str | None
) -> Call[TokenRewardsResponse]:
    request = TokenRewardsRequest.model_validate(
        {"samples": list(samples), "params": _params(params), "policy_tokenizer": policy_tokenizer}
    )
    return Call("POST", "/v1/token-rewards", model_parser(TokenRewardsResponse), _body(request))


def request_slices(samples: Sequence[SampleLike]) -> list[list[SampleLike]]:
    """``samples`` in the slices one request takes (at most ``MAX_BATCH`` each), in order; an
    empty input stays one empty slice, so the request's own validation names it."""
    items = list(samples)
    return [items[i : i + MAX_BATCH] for i in range(0, max(len(items), 1), MAX_BATCH)]


def joined(parts: Sequence[TokenRewardsResponse]) -> TokenRewardsResponse:
    """One response of the slices' responses, results in the samples' order."""
    return TokenRewardsResponse(results=[r for p in parts for r in p.results], grm=parts[-1].grm)


def get_reward(
    query: Sequence[str], prompts: Sequence[str] | None, labels: Sequence[str] | None
) -> Call[dict[str, Any]]:
    """OpenRLHF's remote reward protocol (docs/interop.md): lists as long as ``query``."""
    if isinstance(query, str):
        raise TypeError("query must be a list of strings, not a single string; wrap it: [query]")
    body: dict[str, Any] = {"query": list(query)}
    for name, values in (("prompts", prompts), ("labels", labels)):
        if values is None:
            continue
        if len(values) != len(query):
            raise ValueError(
                f"{name} has {len(values)} entries but query has {len(query)}; "
                "send one per query or leave it out"
            )
        body[name] = list(values)
    return Call("POST", "/get_reward", dict_parser, body)


def push_rollouts(
    samples: Sequence[SampleLike],
    batch_id: str | None,
    params: ParamsLike,
    policy_tokenizer: str | None,
    policy_version: int | None = None,
) -> Call[PushResult]:
    # Same sample/params validation as token_rewards: a batch is rejected here, not after
    # it sat in the queue.
    request = TokenRewardsRequest.model_validate(
        {"samples": list(samples), "params": _params(params), "policy_tokenizer": policy_tokenizer}
    )
    body = _body(request)
    if batch_id is not None:
        body["batch_id"] = batch_id
    if policy_version is not None:
        if policy_version < 0:
            raise ValueError(f"policy_version {policy_version} must be >= 0 (None: unversioned)")
        body["policy_version"] = policy_version
    return Call("POST", "/v1/rollouts", model_parser(PushResult), body, is_push=True)


def rollout_status(batch_id: str) -> Call[BatchStatus]:
    if not batch_id:
        raise ValueError("batch_id is empty; pass the id push_rollouts returned")
    path = f"/v1/rollouts/{quote(batch_id, safe='')}"
    return Call("GET", path, model_parser(BatchStatus))


def rollout_result(batch_id: str) -> Call[ScoredBatch]:
    if not batch_id:
        raise ValueError("batch_id is empty; pass the id push_rollouts returned")
    return Call("GET", f"/v1/rollouts/{quote(batch_id, safe='')}/result", model_parser(ScoredBatch))


def _deliveries(response: httpx.Response) -> list[ScoredDelivery]:
    return model_parser(PullResponse)(response).deliveries


def pull_scored(
    max_batches: int, wait_ms: int, consumer: str, redeliver_after_s: int
) -> Call[list[ScoredDelivery]]:
    body = {"max_batches": max_batches, "wait_ms": wait_ms, "consumer": consumer,
            "redeliver_after_s": redeliver_after_s}  # fmt: skip
    return Call("POST", "/v1/scored/pull", _deliveries, body)


def ack_scored(entry_ids: Sequence[str]) -> Call[AckResult]:
    ids = list(entry_ids)
    if not ids:
        raise ValueError("entry_ids is empty; pass the entry_id of each delivery you trained on")
    return Call("POST", "/v1/scored/ack", model_parser(AckResult), {"entry_ids": ids})


def usage() -> Call[UsageResponse]:
    return Call("GET", "/v1/usage", model_parser(UsageResponse))


def health() -> Call[dict[str, Any]]:
    return Call("GET", "/health", dict_parser)


GrmSampleLike = GrmSampleInput | Mapping[str, Any]
RewriteLike = RewriteInput | Mapping[str, Any]
ScoreItemLike = ScoreItem | Mapping[str, Any]


def locate(samples: Sequence[GrmSampleLike], max_new_tokens: int) -> Call[LocateResponse]:
    request = LocateRequest.model_validate(
        {"samples": list(samples), "max_new_tokens": max_new_tokens}
    )
    return Call("POST", "/v1/locate", model_parser(LocateResponse), _body(request))


def rewrite(
    samples: Sequence[RewriteLike], max_new_tokens: int, locate_max_new_tokens: int
) -> Call[RewriteResponse]:
    request = RewriteRequest.model_validate(
        {
            "samples": list(samples),
            "max_new_tokens": max_new_tokens,
            "locate_max_new_tokens": locate_max_new_tokens,
        }
    )
    return Call("POST", "/v1/rewrite", model_parser(RewriteResponse), _body(request))


def score(
    items: Sequence[ScoreItemLike] | None,
    samples: Sequence[GrmSampleLike] | None,
    add_eos: bool,
) -> Call[ScoreResponse]:
    """``items`` (prompt/output pairs) scores in raw mode, ``samples`` in rlmec mode (§3.1)."""
    if (items is None) == (samples is None):
        raise ValueError("pass exactly one of items= (raw prompt/output) or samples= (RLMEC)")
    mode = "raw" if items is not None else "rlmec"
    request = ScoreRequest.model_validate(
        {
            "mode": mode,
            "items": list(items) if items is not None else None,
            "samples": list(samples) if samples is not None else None,
            "add_eos": add_eos,
        }
    )
    return Call("POST", "/v1/score", model_parser(ScoreResponse), _body(request))


def tokenize(texts: Sequence[str], add_eos: bool) -> Call[TokenizeResponse]:
    """The GRM's output tokenization of each text, as ``/v1/score`` reports it (no engine)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string; wrap it: [text]")
    request = TokenizeRequest.model_validate({"texts": list(texts), "add_eos": add_eos})
    return Call("POST", "/v1/tokenize", model_parser(TokenizeResponse), _body(request))


def models() -> Call[ModelList]:
    return Call("GET", "/v1/models", model_parser(ModelList))


def load_adapter(name: str, path: str) -> Call[AdapterResponse]:
    request = LoadAdapterRequest.model_validate({"name": name, "path": path})
    return Call("POST", "/admin/adapters", model_parser(AdapterResponse), _body(request))


def unload_adapter(name: str) -> Call[AdapterResponse]:
    return Call("DELETE", f"/admin/adapters/{quote(name, safe='')}",
                model_parser(AdapterResponse))  # fmt: skip
