"""The worker process: loads one model's backend and serves generations over the IPC socket.

Started by the pool from a ``spawn`` context with its plan entry as JSON. It connects to the
server's socket, loads the backend, says ``ready`` (or ``load_failed``), then runs requests one
at a time in a thread, streaming deltas; a ``cancel`` stops the one running or drops a queued
one. A backend with ``concurrency`` N (llama-cpp ``parallel: N``) runs N generations at once.
When the server goes away the worker exits, so no orphan survives it.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import logging
import os
import signal
import threading
from typing import Any

from modelyard.compiler.plan import ModelPlan

from .backends import load_backend_class
from .backends.base import Finish, GenerationRequest, Logprob, RequestError, Started
from .ipc import PROTOCOL_VERSION, encode, read_message
from .logs import FORMAT_ENV, configure_logging

log = logging.getLogger(__name__)


def worker_main(plan_json: str, backend_import: str, socket_path: str, log_level: int) -> None:
    configure_logging(log_level, os.environ.get(FORMAT_ENV, "text"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us; Ctrl-C goes to it
    model = ModelPlan.model_validate_json(plan_json)
    asyncio.run(_serve(model, backend_import, socket_path))


async def _serve(model: ModelPlan, backend_import: str, socket_path: str) -> None:
    reader, writer = await asyncio.open_unix_connection(socket_path, limit=64 * 1024 * 1024)
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    post = outbox.put_nowait
    flusher = asyncio.create_task(_flush(outbox, writer))

    try:
        backend = await asyncio.to_thread(load_backend_class(backend_import), model)
    except Exception as exc:  # noqa: BLE001 - any load failure is reported, then we exit
        log.exception("loading %s failed", model.name)
        post({"type": "load_failed", "message": f"{type(exc).__name__}: {exc}"})
        await outbox.join()
        flusher.cancel()
        writer.close()
        return
    post({"type": "ready", "protocol": PROTOCOL_VERSION, "n_ctx": backend.context_size, "pid": os.getpid()})

    queue: asyncio.Queue[tuple[str, GenerationRequest]] = asyncio.Queue()
    cancels: dict[str, threading.Event] = {}
    # A backend with parallel slots runs that many generations at once; the rest wait here.
    concurrency = max(1, getattr(backend, "concurrency", 1))
    # Each running generation holds a thread (backends block); the default pool is smaller.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=concurrency + 4))
    runners = [asyncio.create_task(_run_queue(backend, queue, cancels, post)) for _ in range(concurrency)]
    embed_lock = asyncio.Lock()  # a backend embeds one batch of inputs at a time
    try:
        while (message := await read_message(reader)) is not None:
            kind = message.get("type")
            if kind == "generate":
                cancels[message["id"]] = threading.Event()
                await queue.put((message["id"], GenerationRequest.from_dict(message["request"])))
            elif kind == "embed":
                runners.append(asyncio.create_task(_embed(backend, message, embed_lock, post)))
            elif kind == "cancel" and message["id"] in cancels:
                cancels[message["id"]].set()
            elif kind == "shutdown":
                break
    finally:
        for event in cancels.values():
            event.set()
        for runner in runners:
            runner.cancel()
        flusher.cancel()
        writer.close()


async def _flush(outbox: asyncio.Queue, writer: asyncio.StreamWriter) -> None:
    """Write queued messages, all that are waiting in one write; consecutive text deltas of a
    request are merged (they only pile up when the server is slower than the decoder)."""
    while True:
        batch = [await outbox.get()]
        while not outbox.empty():
            batch.append(outbox.get_nowait())
        merged: list[dict[str, Any]] = []
        for message in batch:
            last = merged[-1] if merged else None
            if (last is not None and message["type"] == "delta" and last["type"] == "delta"
                    and last["id"] == message["id"]):
                merged[-1] = {**last, "text": last["text"] + message["text"], "tokens": last.get("tokens", 1) + 1}
            else:
                merged.append(message)
        writer.write(b"".join(encode(m) for m in merged))
        for _ in batch:
            outbox.task_done()
        await writer.drain()


async def _embed(backend, message: dict[str, Any], lock: asyncio.Lock, post) -> None:
    request_id = message["id"]
    try:
        async with lock:
            vectors, tokens = await asyncio.to_thread(backend.embed, message["inputs"])
        post({"type": "embeddings", "id": request_id, "vectors": vectors, "tokens": tokens})
    except RequestError as exc:
        post({"type": "error", "id": request_id, "status": exc.status, "code": exc.code, "message": exc.message,
              "param": exc.param})
    except Exception as exc:  # noqa: BLE001 - a backend bug fails this request, not the worker
        log.exception("embedding failed")
        post({"type": "error", "id": request_id, "status": 500, "code": "backend_error",
              "message": f"the backend failed: {type(exc).__name__}: {exc}", "param": None})


async def _run_queue(backend, queue: asyncio.Queue, cancels: dict[str, threading.Event], post) -> None:
    loop = asyncio.get_running_loop()
    while True:
        request_id, request = await queue.get()
        cancelled = cancels[request_id]
        if cancelled.is_set():
            cancels.pop(request_id, None)
            continue
        try:
            await asyncio.to_thread(_produce, backend, request_id, request, cancelled, post, loop)
        finally:
            cancels.pop(request_id, None)


def _produce(backend, request_id: str, request: GenerationRequest, cancelled: threading.Event, post,
             loop: asyncio.AbstractEventLoop) -> None:
    """Run one generation (in a thread: the backend blocks), posting its messages to the loop."""

    def emit(message: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(post, message)  # callbacks run in order: so do messages

    try:
        for item in backend.generate(request, cancelled):
            if isinstance(item, Logprob):
                emit({"type": "logprob", "id": request_id, "logprob": item.to_dict()})
            elif isinstance(item, Started):
                emit({"type": "started", "id": request_id, "prompt_tokens": item.prompt_tokens,
                      "cached_tokens": item.cached_tokens})
            elif isinstance(item, Finish):
                emit({"type": "done", "id": request_id, "finish_reason": item.reason,
                      "prompt_tokens": item.prompt_tokens, "completion_tokens": item.completion_tokens})
            else:
                emit({"type": "delta", "id": request_id, "text": item})
    except RequestError as exc:
        emit({"type": "error", "id": request_id, "status": exc.status, "code": exc.code,
              "message": exc.message, "param": exc.param})
    except Exception as exc:  # noqa: BLE001 - a backend bug fails this request, not the worker
        log.exception("generation failed")
        emit({"type": "error", "id": request_id, "status": 500, "code": "backend_error",
              "message": f"the backend failed: {type(exc).__name__}: {exc}", "param": None})
