"""A small, bounded cache of verified chunks, shared by the threads that read them."""

from __future__ import annotations

import threading
from collections import OrderedDict


class RecentChunks:
    """A small, bounded cache of verified chunks: a delta frame's base is usually the chunk read just before it
    (diff reads old then new; a fine-tune series reads bases repeatedly), so it is decoded once, not twice."""

    def __init__(self, budget: int = 16 << 20) -> None:  # counts toward the peak-memory target
        self.budget, self.size = budget, 0
        self.items: OrderedDict[bytes, memoryview] = OrderedDict()
        self.lock = threading.Lock()

    def __contains__(self, chunk: bytes) -> bool:
        return chunk in self.items

    def get(self, chunk: bytes) -> memoryview | None:
        """The cached bytes of a chunk (now most recently used), or None."""
        with self.lock:
            raw = self.items.get(chunk)
            if raw is not None:
                self.items.move_to_end(chunk)
            return raw

    def put(self, chunk: bytes, raw: memoryview) -> None:
        """Cache a chunk's verified bytes, unless over a quarter of the budget; evicts the least recently used."""
        with self.lock:
            if chunk in self.items or len(raw) > self.budget // 4:
                return
            self.items[chunk] = raw.toreadonly()  # shared between callers: nobody may write into it
            self.size += len(raw)
            while self.size > self.budget:
                _, old = self.items.popitem(last=False)
                self.size -= len(old)
