"""Scored batches for trainers outside the cluster (the reward service's HTTP pull/ack and
result routes): :class:`AsyncScoredPuller`.

Same consumer group as :class:`~.reader.ScoredBatchReader` (a team uses one or the other), but
stateless between calls, as HTTP is: a pull hands out entries idle for ``redeliver_after_ms``
(pulled before and never acknowledged: a trainer that crashed) and then new ones; an ack names
the entry ids it trained on. Only the team's own stream is ever read or acknowledged: ids of
another team's entries are simply unknown here.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio

from rlmec.shared.queue.keys import TRAINER_GROUP, keys_for
from rlmec.shared.queue.replies import _fields, _s, _stream_entries
from rlmec.shared.queue.schemas import AckResult, ScoredBatch, ScoredDelivery
from rlmec.shared.queue.scripts import _ACK, _TRIM

BLOCK_SLICE_MS = 2000


class AsyncScoredPuller:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        team: str,
        *,
        consumer: str = "http-0",
        group: str = TRAINER_GROUP,
        redeliver_after_ms: int = 300_000,
    ) -> None:
        self.client = client
        self.keys = keys_for(team)
        self.consumer = consumer
        self.group = group
        self.redeliver_after_ms = redeliver_after_ms
        self._ack = client.register_script(_ACK)
        self._trim = client.register_script(_TRIM)

    async def _ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.keys.scored, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def pull(self, max_batches: int, wait_ms: int) -> list[ScoredDelivery]:
        """Up to ``max_batches``: abandoned deliveries first, then new entries (waiting up to
        ``wait_ms`` for one when there are none). Batches the group already acknowledged are
        acknowledged again and skipped (a duplicate scoring)."""
        await self._ensure_group()
        reply = await self.client.xautoclaim(
            self.keys.scored, self.group, self.consumer, self.redeliver_after_ms, "0-0",
            count=max_batches,
        )  # fmt: skip
        entries: list[tuple[Any, Any]] = [(i, f) for i, f in reply[1] if f]
        if len(entries) < max_batches:
            entries += await self._read_new(max_batches - len(entries), 0 if entries else wait_ms)
        return await self._keep_new(entries)

    async def _read_new(self, count: int, wait_ms: int) -> list[tuple[Any, Any]]:
        """New entries, blocking up to ``wait_ms`` in slices of :data:`BLOCK_SLICE_MS` (one
        long BLOCK would outlast the client's socket timeout and read as Redis down)."""
        deadline = time.monotonic() + wait_ms / 1000
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            block = min(left_ms, BLOCK_SLICE_MS) if left_ms > 0 else None  # 0 would be forever
            fresh = await self.client.xreadgroup(
                self.group, self.consumer, {self.keys.scored: ">"}, count=count, block=block
            )
            found = _stream_entries(fresh)
            if found or block is None:
                return list(found[0][1]) if found else []

    async def _keep_new(self, entries: list[tuple[Any, Any]]) -> list[ScoredDelivery]:
        out: list[ScoredDelivery] = []
        stale: list[str] = []
        for entry_id, raw in entries:
            try:
                batch = ScoredBatch.model_validate_json(_fields(raw)["batch"])
            except (KeyError, ValueError):
                stale.append(_s(entry_id))  # unreadable: never handed out (the reader dead-letters)
                continue
            done = f"acked_by:{self.group}"
            if await self.client.hexists(self.keys.status(batch.batch_id), done):
                stale.append(_s(entry_id))
                continue
            out.append(ScoredDelivery(entry_id=_s(entry_id), batch=batch))
        if stale:
            await self.client.xack(self.keys.scored, self.group, *stale)
        return out

    async def ack(self, entry_ids: list[str]) -> AckResult:
        """Acknowledge the team's entries ``entry_ids`` (after the step that used them); ids not
        in the team's scored stream come back as ``unknown``."""
        await self._ensure_group()
        known: dict[str, str] = {}
        unknown: list[str] = []
        for entry_id in dict.fromkeys(entry_ids):
            try:
                found = await self.client.xrange(self.keys.scored, entry_id, entry_id, count=1)
            except redis.ResponseError:  # not a stream id at all
                found = []
            batch_id = _fields(found[0][1]).get("batch_id") if found else None
            if batch_id:
                known[entry_id] = batch_id
            else:
                unknown.append(entry_id)
        if known:
            await self._ack(
                keys=[
                    self.keys.scored, self.keys.scored_samples, self.keys.scored_bytes,
                    *[self.keys.status(b) for b in known.values()],
                ],
                args=[self.group, repr(time.time()), *known],
            )  # fmt: skip
            await self._trim(keys=[self.keys.scored])
        return AckResult(acked=list(known), unknown=unknown)

    async def result(self, batch_id: str) -> ScoredBatch | None:
        """The team's scored batch ``batch_id`` (its status hash names the stream entry), or
        None when it is not scored, or was consumed and trimmed away."""
        entry = await self.client.hget(self.keys.status(batch_id), "scored_entry")
        if entry is None:
            return None
        found = await self.client.xrange(self.keys.scored, _s(entry), _s(entry), count=1)
        if not found:
            return None
        return ScoredBatch.model_validate_json(_fields(found[0][1])["batch"])
