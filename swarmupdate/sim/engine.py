"""A discrete-event queue and a flow-level network model. Pure: simulated time only.

Network model: every host has an upload and a download capacity in bytes/s. A flow from ``a`` to ``b``
runs at ``min(up(a) / flows out of a, down(b) / flows into b)``, recomputed for the flows that share a
host whenever a flow starts or ends there. This equal share is simpler than max-min fairness (a host may
leave some capacity unused when one of its flows is held back at the other end) and is plenty to study
the swarm, which is bound by uplinks.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

__all__ = ["EventQueue", "Flow", "Host", "Network"]


class EventQueue:
    """Callbacks ordered by time; callbacks pushed for the same time run in the order pushed."""

    __slots__ = ("_heap", "_seq", "events", "now")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        self.now = 0.0
        self.events = 0

    def push(self, at: float, fn: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), fn, args))

    def run(self, until: float, stop: Callable[[], bool]) -> None:
        """Run callbacks in time order until ``stop()`` is true, the queue is empty, or ``until``."""
        heap, pop = self._heap, heapq.heappop
        while heap and not stop():
            if heap[0][0] > until:
                self.now = until
                return
            at, _, fn, args = pop(heap)
            self.now = at
            self.events += 1
            fn(*args)


class Host:
    """A machine's network interface."""

    __slots__ = ("down", "inbound", "name", "outbound", "up")

    def __init__(self, name: str, up: float, down: float) -> None:
        if up <= 0 or down <= 0:
            raise ValueError(f"host {name}: capacities must be > 0")
        self.name = name
        self.up = up
        self.down = down
        # dicts used as ordered sets: iteration order must not depend on object addresses,
        # or runs with the same seed would differ
        self.outbound: dict[Flow, None] = {}
        self.inbound: dict[Flow, None] = {}


class Flow:
    """One transfer in progress. ``payload`` is the caller's; ``on_done(flow)`` runs when it completes."""

    __slots__ = ("dst", "last", "on_done", "payload", "rate", "remaining", "sent", "size", "src", "token")

    def __init__(
        self, src: Host, dst: Host, size: float, now: float, payload: Any, on_done: Callable[[Flow], None]
    ) -> None:
        self.src = src
        self.dst = dst
        self.size = size
        self.remaining = size
        self.rate = 0.0
        self.last = now
        self.token = 0
        self.payload = payload
        self.on_done = on_done
        #: bytes that went out so far (set on completion or cancellation)
        self.sent = 0.0


class Network:
    """Flows over hosts, with completion events in an EventQueue."""

    def __init__(self, queue: EventQueue) -> None:
        self._queue = queue

    def start(self, src: Host, dst: Host, size: float, payload: Any, on_done: Callable[[Flow], None]) -> Flow:
        now = self._queue.now
        flow = Flow(src, dst, size, now, payload, on_done)
        src.outbound[flow] = None
        dst.inbound[flow] = None
        self._reflow(src, dst, now)
        return flow

    def cancel(self, flow: Flow) -> float:
        """Stop a flow; returns the bytes it had sent."""
        now = self._queue.now
        if flow not in flow.src.outbound:
            return flow.sent
        self._settle(flow, now)
        flow.sent = flow.size - flow.remaining
        flow.token = -1
        del flow.src.outbound[flow]
        del flow.dst.inbound[flow]
        self._reflow(flow.src, flow.dst, now)
        return flow.sent

    @staticmethod
    def _settle(flow: Flow, now: float) -> None:
        if now > flow.last:
            flow.remaining = max(0.0, flow.remaining - flow.rate * (now - flow.last))
            flow.last = now

    def _reflow(self, src: Host, dst: Host, now: float) -> None:
        # Only the shares at these two hosts changed: flows out of src and flows into dst.
        up_share = src.up / len(src.outbound) if src.outbound else 0.0
        down_share = dst.down / len(dst.inbound) if dst.inbound else 0.0
        for flow in src.outbound:
            self._rerate(flow, up_share, flow.dst.down / len(flow.dst.inbound), now)
        for flow in dst.inbound:
            if flow.src is not src:
                self._rerate(flow, flow.src.up / len(flow.src.outbound), down_share, now)

    def _rerate(self, flow: Flow, up_share: float, down_share: float, now: float) -> None:
        rate = min(up_share, down_share)
        if rate == flow.rate:
            return
        self._settle(flow, now)
        flow.rate = rate
        flow.token += 1
        self._queue.push(now + flow.remaining / rate, self._finish, flow, flow.token)

    def _finish(self, flow: Flow, token: int) -> None:
        if flow.token != token:
            return  # rescheduled or cancelled since
        flow.token = -1
        flow.remaining = 0.0
        flow.sent = flow.size
        del flow.src.outbound[flow]
        del flow.dst.inbound[flow]
        self._reflow(flow.src, flow.dst, self._queue.now)
        flow.on_done(flow)
