"""What follows a record's changes: the WatchSearch streams it wakes (no stream polls the database)
and the cached messages it invalidates (GetSearch answers from memory)."""
from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import Any


class ChangeFeed:
    """``notify`` may be called from any thread; ``changed`` is awaited on the event loop.

    A stream takes ``changed(id)`` *before* it reads the record and awaits it after: a change made
    between the two resolves the future, so none is missed."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._waiting: dict[str, set[asyncio.Future]] = {}
        self._closed = False

    def changed(self, search_id: str) -> asyncio.Future:
        future = self.loop.create_future()
        if self._closed:
            future.set_result(None)
        else:
            self._waiting.setdefault(search_id, set()).add(future)
            future.add_done_callback(lambda f: self._discard(search_id, f))
        return future

    def notify(self, search_id: str) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._wake, search_id)

    def close(self) -> None:
        """Wake every stream (the service is stopping)."""
        def wake_all() -> None:
            self._closed = True
            for search_id in list(self._waiting):
                self._wake(search_id)
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(wake_all)

    def _wake(self, search_id: str) -> None:
        for future in self._waiting.pop(search_id, ()):
            if not future.done():
                future.set_result(None)

    def _discard(self, search_id: str, future: asyncio.Future) -> None:
        waiting = self._waiting.get(search_id)
        if waiting is not None:
            waiting.discard(future)
            if not waiting:
                del self._waiting[search_id]


class MessageCache:
    """The latest ``Search`` message of recently read searches, so that ``GetSearch`` answers on the
    event loop without touching the database and ``ListSearches`` reads only what changed. Every
    change invalidates its entry (``changed``); a reader caches what it read only if no change
    happened meanwhile (``version`` before the read)."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._messages: OrderedDict[str, Any] = OrderedDict()
        self._versions: dict[str, int] = {}

    def get(self, search_id: str) -> Any | None:
        with self._lock:
            message = self._messages.get(search_id)
            if message is not None:
                self._messages.move_to_end(search_id)
            return message

    def version(self, search_id: str) -> int:
        with self._lock:
            return self._versions.get(search_id, 0)

    def put(self, search_id: str, version: int, message: Any) -> None:
        with self._lock:
            if self._versions.get(search_id, 0) != version:
                return  # changed while it was read: the next reader reads again
            self._messages[search_id] = message
            self._messages.move_to_end(search_id)
            while len(self._messages) > self.size:
                self._messages.popitem(last=False)

    def changed(self, search_id: str) -> None:
        with self._lock:
            self._versions[search_id] = self._versions.get(search_id, 0) + 1
            self._messages.pop(search_id, None)
