"""Trainer side (sync: the training loop is synchronous): :class:`ScoredBatchReader`."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from rlmec.shared.errors import PermissionDeniedError
from rlmec.shared.queue.keys import TRAINER_GROUP, keys_for
from rlmec.shared.queue.replies import _fields, _s, _stream_entries
from rlmec.shared.queue.schemas import ScoredBatch
from rlmec.shared.queue.scripts import _ACK, _TRIM


@dataclass(frozen=True)
class Delivery:
    """A scored batch handed to the trainer; ``ack`` it after the step that used it."""

    entry_id: str
    batch: ScoredBatch


class ScoredBatchReader:
    """Pulls a team's scored batches with a consumer group; see :mod:`rlmec.shared.queue` for how a
    trainer resumes. Not thread-safe: one reader per training process."""

    _RECENT = 100_000  # batch ids remembered as acknowledged, beyond the status hashes

    def __init__(
        self,
        client: redis.Redis,
        team: str,
        *,
        group: str = TRAINER_GROUP,
        consumer: str = "trainer-0",
        claim_idle_ms: int = 60_000,
    ) -> None:
        self.client = client
        self.keys = keys_for(team)
        self.team = self.keys.team
        self.group = group
        self.consumer = consumer
        self.claim_idle_ms = claim_idle_ms
        self._pending_cursor: str | None = "0"
        self._claim_cursor = "0-0"
        self._outstanding: dict[str, str] = {}  # entry id -> batch id, handed out, not acked
        self._acked: OrderedDict[str, None] = OrderedDict()
        self._trim = client.register_script(_TRIM)
        self._ack = client.register_script(_ACK)
        self._ensure_group()

    def _ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.keys.scored, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def pull(self, max_batches: int = 1, block_ms: int = 1000) -> list[Delivery]:
        """Up to ``max_batches`` scored batches: own pending first (resume), then entries idle
        in other consumers, then new ones (blocking up to ``block_ms``). Batch ids this group
        already acknowledged, or that are handed out under another entry, are dropped."""
        if max_batches < 1:
            raise ValueError(f"max_batches ({max_batches}) must be at least 1")
        entries: list[tuple[Any, Any]] = []
        if self._pending_cursor is not None:
            entries += self._read(self._pending_cursor, max_batches, None)
            self._pending_cursor = _s(entries[-1][0]) if entries else None
        if len(entries) < max_batches:
            reply = self.client.xautoclaim(
                self.keys.scored, self.group, self.consumer, self.claim_idle_ms,
                self._claim_cursor, count=max_batches - len(entries),
            )  # fmt: skip
            self._claim_cursor = _s(reply[0])
            entries += [(i, f) for i, f in reply[1] if _s(i) not in self._outstanding]
        if not entries:
            entries = self._read(">", max_batches, block_ms)
        return self._dedupe(entries)

    def _read(self, cursor: str, count: int, block_ms: int | None) -> list[tuple[Any, Any]]:
        try:
            reply = self.client.xreadgroup(
                self.group, self.consumer, {self.keys.scored: cursor}, count=count, block=block_ms
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ensure_group()  # the server lost the group (restart without AOF)
            return []
        found = _stream_entries(reply)
        return found[0][1] if found else []

    def _dedupe(self, entries: list[tuple[Any, Any]]) -> list[Delivery]:
        parsed: list[tuple[str, ScoredBatch | None]] = []
        for entry_id, raw in entries:
            f = _fields(raw)
            try:
                parsed.append((_s(entry_id), ScoredBatch.model_validate_json(f["batch"])))
            except (KeyError, ValueError) as exc:
                self._set_aside(_s(entry_id), f, f"unreadable scored entry: {str(exc)[:500]}")
                parsed.append((_s(entry_id), None))
        pipe = self.client.pipeline(transaction=False)
        for _, batch in parsed:
            if batch is not None:
                pipe.hexists(self.keys.status(batch.batch_id), f"acked_by:{self.group}")
            else:
                pipe.echo("")
        already = pipe.execute()
        out: list[Delivery] = []
        drop: list[str] = []
        for (entry_id, batch), acked in zip(parsed, already, strict=True):
            if batch is None:
                continue
            held = set(self._outstanding.values())
            if acked or batch.batch_id in self._acked or batch.batch_id in held:
                drop.append(entry_id)  # a duplicate: the first copy is (being) trained on
                continue
            self._outstanding[entry_id] = batch.batch_id
            out.append(Delivery(entry_id, batch))
        if drop:
            self.client.xack(self.keys.scored, self.group, *drop)
        return out

    def _set_aside(self, entry_id: str, fields: dict[str, str], reason: str) -> None:
        pipe = self.client.pipeline(transaction=True)
        entry: dict[Any, Any] = {**fields, "reason": reason, "attempts": "0"}
        pipe.xadd(self.keys.dead, entry)
        pipe.xack(self.keys.scored, self.group, entry_id)
        pipe.execute()

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Acknowledge batches once the optimizer step that used them is done. Only this
        reader's team: a delivery of another team is refused, never acknowledged."""
        if not deliveries:
            return
        for d in deliveries:
            if d.batch.team != self.team:
                raise PermissionDeniedError(
                    f"delivery {d.entry_id} belongs to team {d.batch.team!r}, not {self.team!r}; "
                    "acknowledge it with that team's reader"
                )
        self._ack(
            keys=[
                self.keys.scored, self.keys.scored_samples, self.keys.scored_bytes,
                *[self.keys.status(d.batch.batch_id) for d in deliveries],
            ],
            args=[self.group, repr(time.time()), *[d.entry_id for d in deliveries]],
        )  # fmt: skip
        for d in deliveries:
            self._outstanding.pop(d.entry_id, None)
            self._acked[d.batch.batch_id] = None
        while len(self._acked) > self._RECENT:
            self._acked.popitem(last=False)
        self._trim(keys=[self.keys.scored])

    @property
    def outstanding(self) -> int:
        """Batches handed out and not yet acknowledged."""
        return len(self._outstanding)
