"""The worker process: loads one model's backend and serves generations over the IPC socket.

Started by the pool from a ``spawn`` context with its plan entry as JSON. It connects to the
server's socket, loads the backend, says ``ready`` (or ``load_failed``), then reads requests on
its main thread. A backend that decodes on threads of its own (``start``: llama-cpp,
transformers) gets each request queued at once and its decode thread sends every token straight
to the socket: no thread hop and no event loop between a sampled token and the server. Other
backends run ``generate`` in one of ``concurrency`` threads; the rest wait. A ``cancel`` stops a
running generation or drops a queued one.

The worker leads a process group of its own, so that whatever its engine starts (vLLM's engine
core and its workers) can be stopped with it: on ``shutdown``, when the server goes away (EOF),
or after its engine died (``EngineDead``: reported to the request, then the worker exits and the
pool starts a new one), it closes the backend and exits; the pool kills the group after it, so
no orphan survives either.
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
from .backends.base import Backend, EngineDead, GenerationRequest
from .ipc import encode, iter_messages
from .logs import configure_logging
from .messages import PROTOCOL_VERSION, Embeddings, Failure, Finish, Item, Tokens, to_wire

log = logging.getLogger(__name__)


def worker_main(plan_json: str, backend_import: str, socket_path: str, log_level: int, log_format: str) -> None:
    configure_logging(log_level, log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us; Ctrl-C goes to it
    os.setpgid(0, 0)  # a group of our own: the pool stops it whole, and signals to the server's group pass us by
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
    try:
        Dispatcher(backend, channel).serve(sock)
    finally:
        try:
            backend.close()
        except Exception:  # exiting anyway; the pool kills what is left of the group
            log.exception("closing the %s engine failed", model.name)


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

    def __init__(self, channel: Channel, request_id: str, on_end=lambda: None, on_dead=lambda: None) -> None:
        self._send, self._id, self._on_end, self._on_dead = channel.send, request_id, on_end, on_dead

    def put(self, item: Item | Exception) -> None:
        if isinstance(item, Exception) and not isinstance(item, Failure):  # a backend bug fails this request
            item = Failure(f"the backend failed: {type(item).__name__}: {item}", code="backend_error")
        self._send(to_wire(self._id, item))
        if isinstance(item, (Finish, Failure)):
            self._on_end()
        if isinstance(item, EngineDead):
            self._on_dead()


class Dispatcher:
    """Runs the server's requests on the backend; the main thread only reads and dispatches."""

    def __init__(self, backend: Backend, channel: Channel) -> None:
        self.backend, self.channel = backend, channel
        self.cancels: dict[str, threading.Event] = {}
        self._sock: socket.socket | None = None
        # A backend with parallel slots runs that many generations at once; the rest wait in
        # the executor's queue. A push backend's ``start`` returns at once: the threads only set
        # requests up (tokenize, parse grammars) off the thread that reads the socket.
        self.generations = ThreadPoolExecutor(max(1, backend.concurrency), "generate")
        self.embeddings = ThreadPoolExecutor(1, "embed")  # a backend embeds one batch of inputs at a time

    def serve(self, sock: socket.socket) -> None:
        self._sock = sock
        try:
            for message in iter_messages(sock.makefile("rb")):
                kind = message.get("type")
                if kind == "generate":
                    request_id = message["id"]
                    self.cancels[request_id] = threading.Event()
                    self.generations.submit(self._generate, request_id, GenerationRequest.from_dict(message["request"]))
                elif kind == "embed":
                    self.embeddings.submit(self._embed, message["id"], message["inputs"])
                elif kind == "tokenize":
                    self.embeddings.submit(self._tokenize, message)
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
        sink = RequestSink(self.channel, request_id, on_end=lambda: self.cancels.pop(request_id, None),
                           on_dead=self.engine_died)
        if cancelled.is_set():  # cancelled while queued: the server has stopped listening
            self.cancels.pop(request_id, None)
            return
        try:
            self.backend.start(request, cancelled, sink)  # the backend feeds the sink, to its last item
        except Exception as exc:  # refused before it started: reported as this request's error
            if not isinstance(exc, Failure):
                log.exception("generation failed")
            sink.put(exc)

    def engine_died(self) -> None:
        """The engine cannot serve again: stop reading, so the worker exits and the pool, seeing
        the socket close, fails what is left in flight and starts a new worker."""
        log.error("the engine died; the worker exits so that a new one starts")
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _tokenize(self, message: dict) -> None:
        """Text to ids (``text``) or ids to text (``tokens``), on the model's own tokenizer."""
        sink = RequestSink(self.channel, message["id"], on_dead=self.engine_died)
        try:
            if message.get("tokens") is not None:
                tokens = [int(t) for t in message["tokens"]]
                answer = Tokens(tokens, self.backend.detokenize(tokens))
            else:
                text = str(message.get("text", ""))
                tokens = list(self.backend.tokenize(text, bool(message.get("add_special", True))))
                pieces = [self.backend.detokenize([t]) for t in tokens] if message.get("pieces") else None
                answer = Tokens(tokens, text, pieces)
        except Exception as exc:  # a backend bug fails this request, not the worker
            if not isinstance(exc, Failure):
                log.exception("tokenizing failed")
            sink.put(exc)
            return
        self.channel.send(to_wire(message["id"], answer))

    def _embed(self, request_id: str, inputs: list[str | list[int]]) -> None:
        sink = RequestSink(self.channel, request_id, on_dead=self.engine_died)
        try:
            vectors, tokens = self.backend.embed(inputs)
        except Exception as exc:  # a backend bug fails this request, not the worker
            if not isinstance(exc, Failure):
                log.exception("embedding failed")
            sink.put(exc)
            return
        self.channel.send(to_wire(request_id, Embeddings(vectors, tokens)))
