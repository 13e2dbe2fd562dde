"""Reward cache in Redis.

Key: sha256 of the canonical JSON of everything that decides a result: the GRM model id and
revision, the reward parameters, task, question, reference solution and answer, prediction,
a caller-given rewrite and the policy tokenizer. Value: the ScoredSample JSON without the
fields echoed from the request (id, prompt, metadata, behaviour log-probs), with a TTL.

Size bound without touching Redis' ``maxmemory``: every insert also adds the key to a sorted
set scored by insertion time, and a Lua script trims that index (and deletes the entries) to
``max_entries``, oldest first, in the same round trip. Expired entries leave the index there
too, so the bound counts live entries.

Every cache key carries the hash tag ``{cache}`` and the script declares the index and the
entries it writes, so on a Redis Cluster the whole cache lives in one slot (one primary and its
replicas; its size is bounded by ``max_entries`` anyway) and the script never crosses slots.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence

from redis.asyncio import Redis

from rlmec.shared.schemas import GrmInfo, RewardParams, Sample, ScoredSample

CACHE_VERSION = 1
# Fields taken from the request on a hit, never from the cache.
ECHOED = {"id", "prompt", "metadata", "behaviour_logprobs", "cached", "timings"}

_PUT_LUA = """
local index = KEYS[1]
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local max_entries = tonumber(ARGV[3])
for i = 2, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ttl)
  redis.call('ZADD', index, now, KEYS[i])
end
redis.call('ZREMRANGEBYSCORE', index, '-inf', now - ttl)
local excess = redis.call('ZCARD', index) - max_entries
if excess > 0 then
  local old = redis.call('ZPOPMIN', index, excess)
  for i = 1, #old, 2 do redis.call('DEL', old[i]) end
end
return redis.call('ZCARD', index)
"""


def cache_key(
    sample: Sample,
    params: RewardParams,
    grm: GrmInfo,
    policy_tokenizer: str | None,
    *,
    prefix: str,
    scope: str | None = None,
) -> str:
    """Redis key of one sample's result (see the module docstring for what goes in).
    ``scope`` (a team with ``private_cache``) keeps that team's entries apart from everyone's."""
    material: dict[str, object] = {
        "v": CACHE_VERSION,
        "grm": [grm.model_id, grm.revision],
        # edit_penalty is left out while off, so the keys made before it existed still hit;
        # check_equations while off, since those keys were made without the check.
        "params": params.model_dump(mode="json", exclude=_left_out(params)),
        "task": sample.task,
        "question": sample.question,
        "reference_solution": sample.reference_solution,
        "reference_answer": sample.reference_answer,
        "prediction": sample.prediction,
        "rewrite": sample.rewrite,
        "policy_tokenizer": policy_tokenizer,
    }
    if scope is not None:  # absent otherwise: the shared keys stay what they were
        material["scope"] = scope
    canonical = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{prefix}:{{cache}}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def _left_out(params: RewardParams) -> set[str] | None:
    out = {name for name in ("edit_penalty", "check_equations") if not getattr(params, name)}
    return out or None


class RewardCache:
    def __init__(
        self, redis: Redis, *, prefix: str, ttl_s: int, max_entries: int, enabled: bool = True
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.enabled = enabled
        self.index_key = f"{prefix}:{{cache}}:index"
        self._put = redis.register_script(_PUT_LUA)

    async def get_many(self, keys: Sequence[str]) -> list[ScoredSample | None]:
        if not self.enabled or not keys:
            return [None] * len(keys)
        raw = await self.redis.mget(list(keys))
        out: list[ScoredSample | None] = []
        for value in raw:
            # An entry from an older layout that no longer validates is simply a miss.
            try:
                out.append(ScoredSample.model_validate_json(value) if value else None)
            except ValueError:
                out.append(None)
        return out

    async def put_many(self, entries: Sequence[tuple[str, ScoredSample]]) -> None:
        if not self.enabled or not entries:
            return
        keys = [self.index_key, *(key for key, _ in entries)]
        args: list[str | float | int] = [time.time(), self.ttl_s, self.max_entries]
        args += [result.model_dump_json(exclude=ECHOED) for _, result in entries]
        await self._put(keys=keys, args=args)

    async def size(self) -> int:
        return int(await self.redis.zcard(self.index_key))
