"""Objects under one resourceVersion counter, the event history that watches resume from, and the watch stream."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from copy import deepcopy
from dataclasses import dataclass

from tests.kubernetes.fake.objects import KINDS, TERMINAL, ApiError, Obj, Selector


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    resource: str
    obj: Obj  # after the change
    prev: Obj | None  # before it (MODIFIED), for selectors on fields that change

class Store:
    """Objects by (resource, namespace, name) under one resourceVersion counter, the event history that watches
    resume from, and subscribers called with every event in order, under the lock (so they only enqueue)."""

    HISTORY = 20_000

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.RLock())
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self.rv = 0
        self.history: deque[Event] = deque()
        self.compacted_rv = 0  # a watch may resume from any resourceVersion >= this one
        self._expirations = 0
        self.closed = False
        self.subscribers: list[Callable[[Event], None]] = []
        self.peak_running = self.peak_pods = 0

    def _emit(self, type_: str, resource: str, obj: Obj, prev: Obj | None) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        event = Event(self.rv, type_, resource, deepcopy(obj), prev)
        self.history.append(event)
        if len(self.history) > self.HISTORY:
            self.compacted_rv = self.history.popleft().rv
        if resource == "pods":
            phases = [p["status"]["phase"] for (r, _, _), p in self._objects.items() if r == "pods"]
            self.peak_running = max(self.peak_running, phases.count("Running"))
            self.peak_pods = max(self.peak_pods, sum(ph not in TERMINAL for ph in phases))
        for subscriber in self.subscribers:
            subscriber(event)
        self.cond.notify_all()
        return deepcopy(obj)

    def _lookup(self, resource: str, ns: str, name: str) -> Obj:
        obj = self._objects.get((resource, ns, name))
        if obj is None:
            raise KINDS[resource].not_found(name)
        return obj

    def create(self, resource: str, obj: Obj) -> Obj:
        key = (resource, obj["metadata"]["namespace"], obj["metadata"]["name"])
        with self.cond:
            if key in self._objects:
                kind = KINDS[resource]
                raise ApiError(409, "AlreadyExists", f'{kind.qualified} "{key[2]}" already exists',
                               {"name": key[2], "group": kind.group, "kind": resource})
            self._objects[key] = obj
            return self._emit("ADDED", resource, obj, None)

    def get(self, resource: str, ns: str, name: str) -> Obj:
        with self.cond:
            return deepcopy(self._lookup(resource, ns, name))

    def list(self, resource: str, match: Callable[[Obj], bool] = lambda _: True) -> list[Obj]:
        with self.cond:
            return [deepcopy(o) for (r, _, _), o in self._objects.items() if r == resource and match(o)]

    def update(self, resource: str, ns: str, name: str, mutate: Callable[[Obj], None]) -> Obj:
        """Apply `mutate` to the stored object; a MODIFIED event only if it changed anything."""
        with self.cond:
            obj = self._lookup(resource, ns, name)
            before = deepcopy(obj)
            mutate(obj)
            return deepcopy(obj) if obj == before else self._emit("MODIFIED", resource, obj, before)

    def remove(self, resource: str, ns: str, name: str, uid: str | None = None) -> Obj:
        with self.cond:
            obj = self._lookup(resource, ns, name)
            if uid is not None and obj["metadata"]["uid"] != uid:
                raise KINDS[resource].not_found(name)
            del self._objects[(resource, ns, name)]
            return self._emit("DELETED", resource, obj, None)

    def clear(self) -> None:
        """Forget every object and the history, silently (between tests)."""
        with self.cond:
            self._objects.clear()
            self.history.clear()
            self.compacted_rv = self.rv
            self._expirations += 1
            self.peak_running = self.peak_pods = 0
            self.cond.notify_all()

    def compact(self) -> None:
        """Every resourceVersion handed out so far becomes too old (as if other objects had changed since)."""
        with self.cond:
            self.rv += 1
            self.history.clear()
            self.compacted_rv = self.rv
            self.cond.notify_all()

    def expire_watches(self) -> None:
        with self.cond:
            self._expirations += 1
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def watch(self, resource: str, match: Selector, since: int | None, deadline: float,
              client_gone: Callable[[], bool]) -> Iterator[Obj]:
        """The events of one watch request: synthetic ADDED for the current state when `since` is None, then
        every change after `since` that `match` sees (entering the selection is ADDED, leaving it DELETED);
        ERROR 410 when `since` is compacted or expire_watches() is called; ends at the deadline."""
        with self.cond:
            expirations = self._expirations
            cursor = self.rv if since is None else since
            backlog = [] if since is not None else [
                {"type": "ADDED", "object": deepcopy(o)} for (r, _, _), o in self._objects.items()
                if r == resource and match(o)]
        yield from backlog
        while True:
            state, events = self._next(cursor, expirations, deadline)
            if state == "end" or (state == "idle" and client_gone()):
                return
            if state == "expired":
                yield {"type": "ERROR", "object": ApiError(
                    410, "Expired", f"too old resource version: {cursor} ({self.rv})").status()}
                return
            for event in events:
                cursor = event.rv
                out = _watch_event(event, match) if event.resource == resource else None
                if out is not None:
                    yield out

    def _next(self, cursor: int, expirations: int, deadline: float) -> tuple[str, list[Event]]:
        with self.cond:
            left = deadline - time.monotonic()
            if self.closed or left <= 0:
                return "end", []
            if self._expirations != expirations or cursor < self.compacted_rv:
                return "expired", []
            new = self._after(cursor)
            if new:
                return "events", new
            self.cond.wait(min(0.5, left))
            return "idle", []  # the caller comes back: expiry is checked before any new event

    def _after(self, cursor: int) -> list[Event]:
        out = []
        for event in reversed(self.history):
            if event.rv <= cursor:
                break
            out.append(event)
        return out[::-1]


def _watch_event(event: Event, match: Selector) -> Obj | None:
    now_in = match(event.obj)
    if event.type != "MODIFIED":
        return {"type": event.type, "object": event.obj} if now_in else None
    was_in = match(event.prev or {"metadata": {}})
    if not (was_in or now_in):
        return None
    return {"type": "MODIFIED" if was_in and now_in else "ADDED" if now_in else "DELETED", "object": event.obj}
