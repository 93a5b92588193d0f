"""The guard every push backend's decode thread runs under (llama-cpp's slots and transformers'
batches derive it): a bug in the loop fails the requests it holds, queued ones and later ones,
then ends the worker, instead of leaving them waiting forever."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field

from modelyard.launcher.backends.decode_thread import DecodeThread


@dataclass(eq=False)
class Work:
    name: str
    out: queue.Queue = field(default_factory=queue.Queue)


class Broken(DecodeThread):
    """Takes one piece of work, then fails while the rest wait."""

    def __init__(self, on_failure) -> None:
        super().__init__(on_failure)
        self.held: list[Work] = []
        self.go = threading.Event()
        self.start_decoding("broken")

    def _loop(self) -> None:
        self.go.wait(5)
        with self.wakeup:
            self.held.append(self.pending.popleft())
        raise IndexError("injected")

    def _take_in_flight(self) -> list[Work]:
        held, self.held = self.held, []
        return held


def test_a_failing_loop_fails_held_queued_and_later_work_then_calls_on_failure() -> None:
    ended: list[BaseException] = []
    done = threading.Event()
    loop = Broken(lambda exc: (ended.append(exc), done.set()))
    first, second = Work("first"), Work("second")
    loop.submit(first)
    loop.submit(second)
    loop.go.set()
    assert done.wait(5) and [type(e) for e in ended] == [IndexError]
    message = "the model's decode loop failed (IndexError: injected); its worker restarts"
    for work in (first, second):
        error = work.out.get(timeout=1)
        assert isinstance(error, RuntimeError) and str(error) == message
    late = Work("late")
    loop.submit(late)
    assert str(late.out.get(timeout=1)) == message
