"""The worker process: loads one model's backend and serves generations over the IPC socket.

Started by the pool from a ``spawn`` context with its plan entry as JSON. It connects to the
server's socket, loads the backend, says ``ready`` (or ``load_failed``), then reads requests on
its main thread. A backend that decodes on threads of its own (``start``: llama-cpp,
transformers) gets each request queued at once and its decode thread sends every token straight
to the socket: no thread hop and no event loop between a sampled token and the server. Other
backends run ``generate`` in one of ``concurrency`` threads; the rest wait. A ``cancel`` stops a
running generation or drops a queued one. When the server goes away the worker exits, so no
orphan survives it.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from modelyard.compiler.plan import ModelPlan

from .backends import load_backend_class
from .backends.base import Finish, GenerationRequest, Item, Logprob, RequestError, Started
from .ipc import PROTOCOL_VERSION, encode, iter_messages
from .logs import FORMAT_ENV, configure_logging

log = logging.getLogger(__name__)


def worker_main(plan_json: str, backend_import: str, socket_path: str, log_level: int) -> None:
    configure_logging(log_level, os.environ.get(FORMAT_ENV, "text"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us; Ctrl-C goes to it
    model = ModelPlan.model_validate_json(plan_json, context={"checked_by_server": True})
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    channel = Channel(sock)
    try:
        backend = load_backend_class(backend_import)(model)
    except Exception as exc:  # any load failure is reported, then we exit
        log.exception("loading %s failed", model.name)
        channel.send({"type": "load_failed", "message": f"{type(exc).__name__}: {exc}"})
        sock.close()
        return
    channel.send({"type": "ready", "protocol": PROTOCOL_VERSION, "n_ctx": backend.context_size, "pid": os.getpid()})
    Dispatcher(backend, channel).serve(sock)


class Channel:
    """The socket to the server: whole messages, sent from any thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        data = encode(message)
        try:
            with self._lock:
                self._sock.sendall(data)
        except OSError:
            pass  # the server is gone: the main thread sees EOF and the worker exits


class RequestSink:
    """One generation's items as protocol messages (a ``Sink`` for backends' decode threads);
    ``on_end`` runs after its last message (``done`` or ``error``)."""

    def __init__(self, channel: Channel, request_id: str, on_end=lambda: None) -> None:
        self._send, self._id, self._on_end = channel.send, request_id, on_end

    def put(self, item: Item | Exception) -> None:
        rid = self._id
        if isinstance(item, str):
            self._send({"type": "delta", "id": rid, "text": item})
            return
        if isinstance(item, Logprob):
            self._send({"type": "logprob", "id": rid, "logprob": item.to_dict()})
            return
        if isinstance(item, Started):
            self._send({"type": "started", "id": rid, "prompt_tokens": item.prompt_tokens,
                        "cached_tokens": item.cached_tokens})
            return
        if isinstance(item, Finish):
            self._send({"type": "done", "id": rid, "finish_reason": item.reason,
                        "prompt_tokens": item.prompt_tokens, "completion_tokens": item.completion_tokens})
        elif isinstance(item, RequestError):
            self._send({"type": "error", "id": rid, "status": item.status, "code": item.code,
                        "message": item.message, "param": item.param})
        else:  # a backend bug fails this request, not the worker
            self._send({"type": "error", "id": rid, "status": 500, "code": "backend_error",
                        "message": f"the backend failed: {type(item).__name__}: {item}", "param": None})
        self._on_end()


class Dispatcher:
    """Runs the server's requests on the backend; the main thread only reads and dispatches."""

    def __init__(self, backend: Any, channel: Channel) -> None:
        self.backend, self.channel = backend, channel
        self.cancels: dict[str, threading.Event] = {}
        # A backend with parallel slots runs that many generations at once; the rest wait in
        # the executor's queue. With ``start`` the threads only set requests up.
        self.generations = ThreadPoolExecutor(max(1, getattr(backend, "concurrency", 1)), "generate")
        self.embeddings = ThreadPoolExecutor(1, "embed")  # a backend embeds one batch of inputs at a time

    def serve(self, sock: socket.socket) -> None:
        try:
            for message in iter_messages(sock.makefile("rb")):
                kind = message.get("type")
                if kind == "generate":
                    request_id = message["id"]
                    self.cancels[request_id] = threading.Event()
                    self.generations.submit(self._generate, request_id, GenerationRequest.from_dict(message["request"]))
                elif kind == "embed":
                    self.embeddings.submit(self._embed, message["id"], message["inputs"])
                elif kind == "cancel" and (event := self.cancels.get(message["id"])) is not None:
                    event.set()
                elif kind == "shutdown":
                    break
        finally:
            for event in list(self.cancels.values()):
                event.set()
            self.generations.shutdown(wait=False, cancel_futures=True)
            self.embeddings.shutdown(wait=False, cancel_futures=True)
            sock.close()

    def _generate(self, request_id: str, request: GenerationRequest) -> None:
        cancelled = self.cancels[request_id]
        sink = RequestSink(self.channel, request_id, on_end=lambda: self.cancels.pop(request_id, None))
        if cancelled.is_set():  # cancelled while queued: the server has stopped listening
            self.cancels.pop(request_id, None)
            return
        try:
            start = getattr(self.backend, "start", None)
            if start is not None:
                start(request, cancelled, sink)  # returns at once; the decode thread feeds the sink
                return
            for item in self.backend.generate(request, cancelled):
                sink.put(item)
            self.cancels.pop(request_id, None)  # in case it stopped (cancelled) without a Finish
        except Exception as exc:  # reported to the server as this request's error
            if not isinstance(exc, RequestError):
                log.exception("generation failed")
            sink.put(exc)

    def _embed(self, request_id: str, inputs: list[str | list[int]]) -> None:
        try:
            vectors, tokens = self.backend.embed(inputs)
        except Exception as exc:  # a backend bug fails this request, not the worker
            if not isinstance(exc, RequestError):
                log.exception("embedding failed")
            RequestSink(self.channel, request_id).put(exc)
            return
        self.channel.send({"type": "embeddings", "id": request_id, "vectors": vectors, "tokens": tokens})
