"""A bounded queue drained by one daemon thread, for sending reports off the request path.

:meth:`BackgroundSender.submit` never blocks and never raises: when the queue is full the
item is dropped and counted. The worker sends each item with a :class:`herald.Client` made
on first use; failures are counted and noted on stderr (rate-limited), never raised.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Dict, Optional

from .client import Client

_STOP = object()


class BackgroundSender:
    """Sends report bodies to ``POST /api/v1/errors`` from a background thread.

    Args:
        client_factory: builds the :class:`~herald.Client` (called once, in the worker, so
            settings are read lazily and a bad configuration never breaks the caller).
        queue_size: the most reports waiting at once; more are dropped and counted.
        name: the worker thread's name.

    Counters (read them for metrics or tests): ``sent``, ``dropped`` (queue full),
    ``failed`` (Herald unreachable or rejecting, after the client's retries).
    """

    def __init__(self, client_factory: Callable[[], Client], *, queue_size: int = 1000, name: str = "herald-sender"):
        self._factory = client_factory
        self._queue: "queue.Queue[Any]" = queue.Queue(maxsize=max(1, queue_size))
        self._name = name
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self._client: Optional[Client] = None
        self._closed = False
        self._last_complaint = 0.0
        self.sent = 0
        self.dropped = 0
        self.failed = 0
        self.last_error: Optional[str] = None

    def submit(self, report: Dict[str, Any]) -> bool:
        """Queues one report; ``False`` (and ``dropped`` += 1) when full or closed. Never blocks."""
        if self._closed:
            self.dropped += 1
            return False
        try:
            self._ensure_worker()
            self._queue.put_nowait(report)
            return True
        except queue.Full:
            self.dropped += 1
            return False
        except Exception:  # e.g. a thread that cannot start at interpreter shutdown
            self.dropped += 1
            return False

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until every queued report was handled; ``False`` on timeout."""
        deadline = time.monotonic() + max(0.0, timeout)
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline or not self._alive():
                return not self._queue.unfinished_tasks
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Flushes (up to ``timeout``), then stops the worker. Later submits are dropped."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        thread = self._thread
        if thread is not None and thread.is_alive():
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass
            thread.join(timeout=0.5)

    @property
    def pending(self) -> int:
        """Reports queued or being sent."""
        return self._queue.unfinished_tasks

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()

    def _ensure_worker(self) -> None:
        if self._alive():
            return
        with self._lock:
            if self._alive():
                return
            if self._pid != os.getpid():
                # A forked child (gunicorn, Celery prefork): the parent's thread and
                # queued items did not come along; start clean.
                self._pid = os.getpid()
                self._queue = queue.Queue(maxsize=self._queue.maxsize)
                self._client = None
            t = threading.Thread(target=self._run, name=self._name, daemon=True)
            t.start()
            self._thread = t

    def _run(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            try:
                if item is _STOP:
                    return
                self._send(item)
            finally:
                q.task_done()

    def _send(self, report: Dict[str, Any]) -> None:
        try:
            if self._client is None:
                self._client = self._factory()
            self._client.post_report(report)
            self.sent += 1
        except Exception as e:  # never let one bad report stop the worker
            self.failed += 1
            self.last_error = f"{type(e).__name__}: {e}"
            self._complain()

    def _complain(self) -> None:
        now = time.monotonic()
        if now - self._last_complaint < 60.0:
            return
        self._last_complaint = now
        try:
            sys.stderr.write(f"herald: could not send an error report ({self.failed} failed so far): {self.last_error}\n")
        except Exception:
            pass
