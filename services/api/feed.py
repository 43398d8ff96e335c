"""Wakes the WatchSearch streams of a search when its record changes, so no stream polls the database."""
from __future__ import annotations

import asyncio


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
