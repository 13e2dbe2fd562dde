"""Who engine work is for, and a fair order between them: admission inside the GRM.

The reward service shares its GRM calls between teams by weighted fair queuing, but a call it
has sent still queues *inside* the engine behind every call sent before it: a light team's one
sample waited for the heavy team's eight calls of 64 (BENCHMARKS.md, ``fairness``). So the
reward service names each call's team and weight in two headers
(:mod:`rlmec.shared.grm_schemas`). The GRM is internal, so they are trusted, and they decide
only the order of work. An engine that forms its own batches (``hf``) picks the next batch by
the same stride scheduling: the tenant with the least service over its weight goes first, and
while several tenants wait a batch holds one tenant's work, so one sample is not made to wait
for 31 others in its own batch. With one tenant waiting, batches fill as before. The ``vllm``
engine, which forms its batches itself, gets each request's priority from
:class:`FairPriorities` (start-time fair queuing) and runs vLLM's priority scheduler.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_TENANT_CHARS = 64


@dataclass(frozen=True)
class Tenant:
    name: str = ""
    weight: float = 1.0


ANONYMOUS = Tenant()
current_tenant: contextvars.ContextVar[Tenant] = contextvars.ContextVar(
    "rlmec_tenant", default=ANONYMOUS
)


def tenant_from_headers(name: str | None, weight: str | None) -> Tenant:
    """The tenant the headers name; anything malformed counts as the anonymous tenant or
    weight 1 (the headers order work, they grant nothing)."""
    try:
        w = min(max(float(weight), 0.01), 100.0) if weight else 1.0
    except ValueError:
        w = 1.0
    if w != w:  # NaN
        w = 1.0
    return Tenant((name or "")[:MAX_TENANT_CHARS], w)


@dataclass
class StrideClock:
    """Stride scheduling over tenants: each has a *pass*, its service so far over its weight.
    A tenant that was idle starts at the pass of the latest grant, so idle time is not banked
    as credit to burst with later."""

    _pass: dict[str, float] = field(default_factory=dict)
    _now: float = 0.0

    def next(self, waiting: Iterable[str]) -> str:
        """The waiting tenant to serve next (the first of the smallest pass: earliest wins)."""
        return min(waiting, key=lambda t: max(self._pass.get(t, 0.0), self._now))

    def charge(self, tenant: Tenant, cost: float) -> None:
        start = max(self._pass.get(tenant.name, 0.0), self._now)
        self._now = start
        # A pass at or behind the clock means the same as none: forget it (bounded memory).
        self._pass = {t: p for t, p in self._pass.items() if p > start}
        self._pass[tenant.name] = start + cost / tenant.weight


class FairPriorities:
    """Start-time fair queuing tags for an engine that orders its own waiting queue by priority
    (vLLM's ``scheduling_policy="priority"``: smaller first, ties by arrival).

    A request's tag is its tenant's finish tag so far or the virtual time, whichever is later,
    and the tenant's finish tag grows by ``cost / weight``. The virtual time is the smallest tag
    still in the engine (the work being served now), so a tenant that queued 500 requests at
    once is served in the order it sent them while a tenant arriving later starts at the
    current point of service, not behind the whole backlog. Tags are assigned at submission:
    the engine, not this class, decides when each runs."""

    def __init__(self) -> None:
        self._finish: dict[str, float] = {}
        self._active: dict[int, float] = {}  # request key -> its tag, while in the engine
        self._served = 0.0  # the largest tag that has left the engine
        self._next_key = 0

    def virtual_time(self) -> float:
        return min(self._active.values(), default=self._served)

    def admit(self, tenant: Tenant, cost: float = 1.0) -> tuple[int, float]:
        """(key for :meth:`done`, tag) of a new request of ``tenant``."""
        now = self.virtual_time()
        # A finish tag at or behind the virtual time means the same as none (bounded memory).
        self._finish = {t: f for t, f in self._finish.items() if f > now}
        tag = max(self._finish.get(tenant.name, 0.0), now)
        self._finish[tenant.name] = tag + cost / tenant.weight
        key, self._next_key = self._next_key, self._next_key + 1
        self._active[key] = tag
        return key, tag

    def done(self, key: int) -> None:
        tag = self._active.pop(key, None)
        if tag is not None:
            self._served = max(self._served, tag)

    @staticmethod
    def priority(tag: float) -> int:
        """vLLM's integer priority of a tag (milli-units of cost: ordering is kept)."""
        return int(tag * 1000)
