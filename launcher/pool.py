"""Worker processes, one per model, and their supervision.

A worker starts on its model's first request (or at launch with ``preload``), from a ``spawn``
context so no server state leaks into it. Requests wait for a loading model up to
``load_wait_s``, then get 503 + Retry-After. A worker that dies fails its in-flight requests
with a clear error naming how it died (``worker died: SIGSEGV during decode of model X``); the
next request restarts it, after a backoff that doubles with each consecutive failure. A worker
counts as healthy again only once it has answered a request, so one that loads and then crashes
on its first decode backs off like one that cannot load, rather than restart-looping.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from modelyard.compiler import backends
from modelyard.compiler.plan import LaunchPlan, ModelPlan

from .backends import engines
from .backends.base import GenerationRequest
from .ipc import encode, read_message
from .logs import current_settings
from .messages import PROTOCOL_VERSION, Embeddings, Failure, Finish, Item, Tokens, from_wire
from .worker import worker_main

log = logging.getLogger(__name__)


def describe_exit(exitcode: int | None) -> str:
    """How a worker process ended, in words: ``SIGSEGV``, ``exit status 3``."""
    if exitcode is None:
        return "an unknown cause (its exit status could not be read)"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


def kill_group(pid: int | None) -> None:
    """Kill what is left of a worker's process group (it leads one: ``worker_main``), once the
    worker itself has exited or been killed: processes its engine started do not outlive it."""
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty: nothing was left


class ModelUnavailable(Failure):
    """The model cannot take requests right now (loading, cooling down after failures)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, code="model_unavailable", retry_after=retry_after)


@dataclass(frozen=True)
class PoolSettings:
    load_wait_s: float = 300.0  # how long a request waits for its model to load
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    shutdown_grace_s: float = 5.0
    idle_unload_s: float | None = None  # stop a worker idle this long
    max_resident: int | None = None  # most workers loaded at once (least recently used idle ones go)
    stall_timeout_s: float = 120.0  # a busy worker silent this long is killed (SIGSTOPped, stuck)

    @classmethod
    def from_plan(cls, plan: LaunchPlan) -> PoolSettings:
        return cls(idle_unload_s=plan.server.idle_unload_s, max_resident=plan.server.max_resident_models,
                   stall_timeout_s=plan.server.worker_stall_timeout_s)


class ModelWorker:
    def __init__(self, model: ModelPlan, backend_import: str, socket_dir: str, settings: PoolSettings) -> None:
        self.model = model
        self.backend_import = backend_import
        self.settings = settings
        self.socket_path = os.path.join(socket_dir, f"w{id(self):x}.sock")
        self.process: multiprocessing.process.BaseProcess | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.ready: asyncio.Future[None] | None = None
        self.streams: dict[str, asyncio.Queue[Item | Embeddings | Failure]] = {}
        self.failures = 0
        self.cooldown_until = 0.0
        self.last_error = ""
        self.restarts = 0
        self.doing: dict[str, str] = {}  # request id -> what it asks the worker ("decode", "embedding")
        self.last_used = time.monotonic()
        self.last_progress = time.monotonic()  # its last message, or the start of its current busy spell
        self.stalled = False  # killed by the watchdog: its death says so
        self.engine_died: str | None = None  # the worker reported its engine dead: its exit says so
        self.stopping = False  # a deliberate stop (shutdown, idle, eviction): not a crash
        self.make_room: Any = None  # set by the pool: evicts another worker before this one loads
        # A client's keep-alive (Ollama's keep_alive): seconds idle before unloading, over the
        # server's idle_unload_s; None: the server's; math.inf: never.
        self.keep_alive_s: float | None = None
        self._start_lock = asyncio.Lock()
        self._ids = itertools.count()
        self._server: asyncio.base_events.Server | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive() and self.writer is not None

    @property
    def busy(self) -> bool:
        return bool(self.streams) or (self.ready is not None and not self.ready.done())

    @property
    def resident(self) -> bool:
        """Loaded or loading: it holds memory."""
        return self.process is not None and self.process.is_alive()

    async def start(self) -> None:
        """Make sure the worker is up and loaded; raise ModelUnavailable if it cannot be."""
        async with self._start_lock:
            if self.ready is None or (self.ready.done() and not self.alive):
                remaining = self.cooldown_until - time.monotonic()
                if remaining > 0:
                    raise ModelUnavailable(
                        f"model {self.model.name!r} failed ({self.last_error}); retrying in {remaining:.0f} s",
                        retry_after=max(1, round(remaining)),
                    )
                if self.make_room is not None:
                    await self.make_room(self)
                await self._spawn()
            ready = self.ready
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout=self.settings.load_wait_s)
        except asyncio.TimeoutError:
            raise ModelUnavailable(f"model {self.model.name!r} is still loading", retry_after=5) from None

    async def _spawn(self) -> None:
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self._server = await asyncio.start_unix_server(self._on_connect, self.socket_path, limit=64 * 1024 * 1024)
        context = multiprocessing.get_context("spawn")
        # A daemonic process may not start processes; an engine that does (vLLM) gets a worker
        # that is not one. Either way the worker's process group is stopped with it.
        spec = backends.resolve(self.model.backend)
        self.process = context.Process(
            target=worker_main, name=f"modelyard-worker-{self.model.name}",
            daemon=not (spec is not None and spec.child_processes),
            args=(self.model.model_dump_json(), self.backend_import, self.socket_path, *current_settings()),
        )
        self.process.start()
        log.info("starting worker for %s (pid %s)", self.model.name, self.process.pid)
        self._watcher = asyncio.create_task(self._watch_startup())  # held: the loop keeps weak references

    async def _watch_startup(self) -> None:
        # A worker that dies before connecting (import error, bad plan) never says anything.
        while self.ready is not None and not self.ready.done():
            if self.process is not None and not self.process.is_alive():
                self._fail(f"worker died: {describe_exit(self.process.exitcode)} while loading model {self.model.name}")
                return
            await asyncio.sleep(0.2)

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await read_message(reader)
        if first is None or first.get("type") != "ready":
            message = first.get("message") if first else "connection closed"
            self._fail(f"load failed: {message}")
            writer.close()
            return
        if first.get("protocol") != PROTOCOL_VERSION:
            self._fail(f"worker speaks protocol {first.get('protocol')}, expected {PROTOCOL_VERSION}")
            writer.close()
            return
        self.writer = writer
        assert self.ready is not None
        if not self.ready.done():
            self.ready.set_result(None)
        log.info("model %s ready (n_ctx=%s)", self.model.name, first.get("n_ctx"))
        watchdog = asyncio.create_task(self._watch_progress(self.process))
        try:
            await self._read_loop(reader, self.process)
        finally:
            watchdog.cancel()
            writer.close()  # one socket a worker: a crash must not leak it

    async def _read_loop(self, reader: asyncio.StreamReader, owner: Any) -> None:
        while (message := await read_message(reader)) is not None:
            self.last_progress = time.monotonic()
            if message.get("type") in ("done", "embeddings", "tokens"):
                self.failures = 0  # it answered: healthy again
            elif message.get("type") == "error" and message.get("code") == "worker_crashed":
                self.engine_died = str(message.get("message"))  # EngineDead: the worker exits next
            stream = self.streams.get(message.get("id", ""))
            if stream is not None and (item := from_wire(message)) is not None:
                stream.put_nowait(item)
        # EOF: the worker is gone. Fail whatever it was doing.
        if self.stopping or self.process is not owner:
            return  # stopped on purpose (idle, evicted): the next request starts it again
        self.writer = None
        # Held while the death is recorded, so no request starts a new worker in between.
        async with self._start_lock:
            # The socket closes as the process dies; its exit status is there a moment later.
            if owner is not None:
                await asyncio.to_thread(owner.join, 5)
                kill_group(owner.pid)  # what its engine started dies with it
            doing = sorted(set(self.doing.values()))
            during = (f"during {' and '.join(doing)} of model {self.model.name}" if doing
                      else f"while model {self.model.name} was idle")
            if self.stalled:
                self.stalled = False
                reason = (f"worker stalled: no progress for {self.settings.stall_timeout_s:g} s {during}; "
                          "it was killed and restarts")
            elif self.engine_died is not None:
                reason = f"the engine of model {self.model.name} died ({self.engine_died}); its worker restarts"
                self.engine_died = None
            else:
                reason = f"worker died: {describe_exit(owner.exitcode if owner else None)} {during}"
            if self.streams:
                log.error("worker for %s died with %d request(s) in flight", self.model.name, len(self.streams))
            for stream in self.streams.values():
                stream.put_nowait(Failure(reason, code="worker_crashed", retry_after=1))
            self._fail(reason, restart=True)

    async def _watch_progress(self, owner: Any) -> None:
        """Kill a worker that holds requests but has said nothing for ``stall_timeout_s``: a
        stopped (SIGSTOP) or wedged process would otherwise hang its requests forever, with
        /readyz still 200. Its death then fails the requests and restarts it, as a crash does."""
        limit = self.settings.stall_timeout_s
        while owner is self.process and owner.is_alive():
            await asyncio.sleep(min(1.0, limit / 4))
            if self.streams and time.monotonic() - self.last_progress > limit:
                log.error("model %s: worker (pid %s) made no progress for %.0f s with %d request(s); killing it",
                          self.model.name, owner.pid, limit, len(self.streams))
                self.stalled = True
                owner.kill()
                return

    def _fail(self, reason: str, restart: bool = False) -> None:
        self.failures += 1
        self.restarts += int(restart)
        self.last_error = reason
        backoff = min(self.settings.backoff_initial_s * 2 ** (self.failures - 1), self.settings.backoff_max_s)
        # A crash after serving is retried at once; repeated failures back off.
        self.cooldown_until = time.monotonic() + (0 if restart and self.failures == 1 else backoff)
        self.writer = None
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ModelUnavailable(f"model {self.model.name!r}: {reason}",
                                                      retry_after=max(1, round(backoff))))
            self.ready.exception()  # mark retrieved: requests waiting on it re-raise it themselves
        if self._server is not None:
            self._server.close()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        log.error("model %s: %s", self.model.name, reason)

    async def _open_stream(self) -> tuple[str, asyncio.Queue[Item | Embeddings | Failure]]:
        """Start the worker if needed; a new request id and the queue its replies arrive on."""
        self.last_used = time.monotonic()
        await self.start()
        if self.writer is None:
            raise ModelUnavailable(f"model {self.model.name!r} is restarting", retry_after=1)
        request_id = f"r{next(self._ids)}"
        if not self.streams:  # busy from now: the watchdog measures silence from here
            self.last_progress = time.monotonic()
        stream: asyncio.Queue[Item | Embeddings | Failure] = asyncio.Queue()
        self.streams[request_id] = stream
        return request_id, stream

    def _close_stream(self, request_id: str) -> None:
        self.streams.pop(request_id, None)
        self.doing.pop(request_id, None)

    @property
    def failure(self) -> tuple[str, float] | None:
        """Why the model cannot serve right now and the seconds until it is tried again; None
        when it is up, loading, unloaded on purpose, or healthy since its last failure."""
        if self.failures == 0 or self.alive:
            return None
        return self.last_error, max(0.0, self.cooldown_until - time.monotonic())

    async def generate(self, request: GenerationRequest) -> AsyncIterator[Item]:
        """One generation's items, to its ``Finish``; its ``Failure`` is raised."""
        request_id, stream = await self._open_stream()
        self.doing[request_id] = "decode"
        finished = False
        try:
            self.writer.write(encode({"type": "generate", "id": request_id, "request": request.to_dict()}))
            while True:
                item = await stream.get()
                if isinstance(item, Failure):
                    finished = True
                    raise item
                yield item  # type: ignore[misc]
                if isinstance(item, Finish):
                    finished = True
                    return
        finally:
            self._close_stream(request_id)
            self.last_used = time.monotonic()
            if not finished and self.writer is not None:  # the client went away, or a stop matched
                self.writer.write(encode({"type": "cancel", "id": request_id}))

    async def embed(self, inputs: list[str | list[int]]) -> Embeddings:
        """The vectors of ``inputs``; the worker's ``Failure`` is raised."""
        reply = await self._ask("embedding", {"type": "embed", "inputs": inputs})
        assert isinstance(reply, Embeddings)
        return reply

    async def tokenize(self, text: str | None, tokens: list[int] | None, add_special: bool,
                       pieces: bool = False) -> Tokens:
        """``text``'s ids, or ``tokens``' text, from the model's tokenizer; the worker's
        ``Failure`` is raised."""
        reply = await self._ask("tokenizing", {"type": "tokenize", "text": text, "tokens": tokens,
                                               "add_special": add_special, "pieces": pieces})
        assert isinstance(reply, Tokens)
        return reply

    async def _ask(self, doing: str, message: dict[str, Any]) -> Item | Embeddings:
        """One message to the worker and its one reply (not a stream of items)."""
        request_id, stream = await self._open_stream()
        self.doing[request_id] = doing
        try:
            self.writer.write(encode({**message, "id": request_id}))
            item = await stream.get()
            if isinstance(item, Failure):
                raise item
            return item
        finally:
            self._close_stream(request_id)

    async def unload(self, why: str) -> None:
        """Stop the worker to free its memory; the next request loads it again."""
        log.info("unloading %s (%s)", self.model.name, why)
        try:
            await self.stop()
        finally:
            self.stopping = False
            self.ready, self.process, self.writer = None, None, None

    async def stop(self) -> None:
        self.stopping = True
        if self.writer is not None:
            try:
                self.writer.write(encode({"type": "shutdown"}))
                await self.writer.drain()
            except ConnectionError:
                pass
        if self.process is not None:
            await asyncio.to_thread(self.process.join, self.settings.shutdown_grace_s)
            if self.process.is_alive():
                self.process.terminate()
                await asyncio.to_thread(self.process.join, 2)
            if self.process.is_alive():
                self.process.kill()
            kill_group(self.process.pid)
        if self._server is not None:
            self._server.close()
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)


class WorkerPool:
    """One ``ModelWorker`` per model of the plan. ``backends`` maps backend → engine import string
    (default: the registry's engines; tests pass fakes)."""

    def __init__(self, plan: LaunchPlan, *, backends: dict[str, str] | None = None,
                 settings: PoolSettings | None = None) -> None:
        self._registry = engines() if backends is None else backends
        self._socket_dir = tempfile.mkdtemp(prefix="modelyard-")
        self.settings = settings or PoolSettings.from_plan(plan)
        self.workers: dict[str, ModelWorker] = {}
        self._reaper: asyncio.Task | None = None
        for model in plan.models:
            self.add(model)

    def add(self, model: ModelPlan) -> None:
        """Serve one more model (a gallery install); its worker starts on first use."""
        worker = ModelWorker(model, self._registry[model.backend], self._socket_dir, self.settings)
        worker.make_room = self._make_room
        self.workers[model.name] = worker

    async def _make_room(self, starting: ModelWorker) -> None:
        """Keep at most ``max_resident`` workers: evict the least recently used idle ones first.
        Busy workers are never evicted; when all are busy, the new load waits its turn (503)."""
        self._ensure_reaper()
        limit = self.settings.max_resident
        if limit is None:
            return
        resident = [w for w in self.workers.values() if w.resident and w is not starting]
        while len(resident) >= limit:
            idle = sorted((w for w in resident if not w.busy), key=lambda w: w.last_used)
            if not idle:
                raise ModelUnavailable(f"model {starting.model.name!r} cannot load: all {limit} resident models "
                                       "are busy", retry_after=5)
            await idle[0].unload(f"making room for {starting.model.name}: at most {limit} resident")
            resident.remove(idle[0])

    def _ensure_reaper(self) -> None:
        limits = [self._idle_limit(w) for w in self.workers.values()]
        if self._reaper is None and any(limit != math.inf for limit in limits):
            self._reaper = asyncio.get_running_loop().create_task(self._reap_idle())

    def _idle_limit(self, worker: ModelWorker) -> float:
        if worker.keep_alive_s is not None:
            return worker.keep_alive_s
        return math.inf if self.settings.idle_unload_s is None else self.settings.idle_unload_s

    async def _reap_idle(self) -> None:
        """Unload workers idle past their limit (a client's keep-alive, else ``idle_unload_s``)."""
        while True:
            finite = [limit for w in self.workers.values() if (limit := self._idle_limit(w)) != math.inf]
            await asyncio.sleep(min(max(min(finite, default=30) / 4, 0.05), 30))
            now = time.monotonic()
            for worker in list(self.workers.values()):
                limit = self._idle_limit(worker)
                if worker.resident and not worker.busy and now - worker.last_used >= limit:
                    await worker.unload(f"idle for {now - worker.last_used:.0f} s")

    async def keep_alive(self, model: str, seconds: float) -> None:
        """How long ``model`` stays loaded once idle, from now on (``math.inf``: until the server
        stops; 0: unloaded as soon as it is idle, now if it is idle already)."""
        worker = self.workers[model]
        worker.keep_alive_s = seconds
        if seconds <= 0 and worker.resident and not worker.busy:
            await worker.unload("keep_alive 0")
        self._ensure_reaper()

    def loaded(self) -> dict[str, float | None]:
        """The models loaded now, each with the seconds until it is unloaded if it stays idle
        (None: it is not unloaded for idleness)."""
        now = time.monotonic()
        return {name: None if (limit := self._idle_limit(w)) == math.inf else max(0.0, w.last_used + limit - now)
                for name, w in self.workers.items() if w.alive}

    async def remove(self, name: str) -> None:
        """Stop serving ``name``: its worker stops; requests in flight get the worker's error."""
        worker = self.workers.pop(name, None)
        if worker is not None:
            await worker.stop()

    async def generate(self, model: str, request: GenerationRequest) -> AsyncIterator[Item]:
        async for item in self.workers[model].generate(request):
            yield item

    async def embed(self, model: str, inputs: list[str | list[int]]) -> Embeddings:
        return await self.workers[model].embed(inputs)

    async def tokenize(self, model: str, text: str | None, tokens: list[int] | None, add_special: bool,
                       pieces: bool = False) -> Tokens:
        return await self.workers[model].tokenize(text, tokens, add_special, pieces)

    async def preload(self) -> None:
        """Start the workers (as many as may be resident at once)."""
        workers = list(self.workers.values())[:self.settings.max_resident or None]
        await asyncio.gather(*(w.start() for w in workers), return_exceptions=True)

    def failures(self) -> dict[str, tuple[str, float]]:
        """Models that cannot serve now: the reason and the seconds until the next try."""
        return {name: failure for name, w in sorted(self.workers.items()) if (failure := w.failure) is not None}

    def stats(self) -> dict[str, dict[str, int]]:
        """Per model: worker up (1/0), generations in flight, restarts after crashes."""
        return {name: {"loaded": int(w.alive), "in_flight": len(w.streams), "restarts": w.restarts}
                for name, w in self.workers.items()}

    def worker_pid(self, model: str) -> int | None:
        process = self.workers[model].process
        return process.pid if process is not None and process.is_alive() else None

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(w.stop() for w in self.workers.values()))
        try:
            os.rmdir(self._socket_dir)
        except OSError:
            pass
