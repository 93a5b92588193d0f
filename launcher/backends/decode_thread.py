"""The decode thread a push backend runs (llama-cpp's slots, transformers' batches), guarded.

A subclass implements ``_loop`` (take ``pending`` work under ``wakeup``, decode it, deliver each
item into the work's ``out`` sink) and ``_take_in_flight`` (the work it holds outside
``pending``). A Python error that escapes ``_loop`` is a bug (client input is checked before it
gets here), and the engine's state is unknown after it: every request in flight or queued gets
the error, later ones get it at once, and ``on_failure`` runs (by default the worker process
exits and the supervisor starts a fresh one), so no request waits forever.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

EXIT_DECODE_LOOP_FAILED = 70  # EX_SOFTWARE: the worker exits so the supervisor starts a fresh one


def exit_worker(exc: BaseException) -> None:
    """What a failed decode loop does by default: end the worker process (its requests have had
    their error); the supervisor restarts it."""
    log.critical("the decode loop failed; exiting so that a fresh worker takes over")
    os._exit(EXIT_DECODE_LOOP_FAILED)


class DecodeThread:
    def __init__(self, on_failure: Callable[[BaseException], None] = exit_worker) -> None:
        self._on_failure = on_failure
        self.failure: str | None = None  # set once the loop has failed: nothing runs any more
        self.pending: deque[Any] = deque()
        self.wakeup = threading.Condition()

    def start_decoding(self, name: str) -> None:
        """Start the thread (last in the subclass's ``__init__``, once its state is set up)."""
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def submit(self, work: Any) -> None:
        """Queue ``work`` (anything with an ``out`` sink) for the loop."""
        with self.wakeup:
            if self.failure is None:
                self.pending.append(work)
                self.wakeup.notify()
                return
        work.out.put(RuntimeError(self.failure))

    def _loop(self) -> None:
        raise NotImplementedError

    def _take_in_flight(self) -> list[Any]:
        """The work being decoded (not in ``pending``), removed from the loop's state."""
        return []

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # whatever broke, the requests must hear of it (and it is logged)
            log.exception("the decode loop failed")
            message = f"the model's decode loop failed ({type(exc).__name__}: {exc}); its worker restarts"
            with self.wakeup:
                self.failure = message
                stranded = [*self._take_in_flight(), *self.pending]
                self.pending.clear()
            for work in stranded:
                work.out.put(RuntimeError(message))
            self._on_failure(exc)
