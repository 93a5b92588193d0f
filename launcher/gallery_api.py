"""The gallery install API on the running server, LocalAI's routes and shapes.

``GET /models/available`` (entries, with ``installed``), ``POST /models/apply``
(``{"id": "gallery@name"}`` with optional ``name`` and ``overrides``) → ``{"uuid", "status"}``,
``GET /models/jobs/{uuid}`` (progress, error), ``POST /models/delete/{name}``.

Installs run one at a time in a worker thread (downloads block); the queue is bounded. A
finished install is compiled into a ``ModelPlan`` and handed to ``on_installed``, which adds it
to the served models: no restart. The same jobs serve ``launch --models`` (installed before
``/readyz`` turns ready) and on-demand installs (a request naming a gallery entry).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from modelyard.compiler.gallery import GalleryEntry, GalleryError
from modelyard.compiler.plan import ModelPlan

from .errors import OpenAIError
from .galleries import HUGGINGFACE, url_entry
from .installer import Installer, InstallProgress
from .protocol import ApplyRequest, parse_body, read_body
from .routes import Endpoint, Operation

log = logging.getLogger(__name__)

MAX_PENDING_JOBS = 16
MAX_KEPT_JOBS = 256
MAX_APPLY_BODY = 64 * 1024  # finished jobs stay visible for polling; the oldest go first


@dataclass
class InstallJob:
    id: str
    ref: str
    name: str | None
    overrides: dict[str, Any]
    target: str | GalleryEntry
    progress: InstallProgress = field(default_factory=InstallProgress)
    state: str = "queued"  # queued, running, done, failed
    error: str | None = None
    model: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def status(self) -> dict[str, Any]:
        p = self.progress
        return {"uuid": self.id, "id": self.ref, "state": self.state, "processed": self.state in ("done", "failed"),
                "message": self.error or p.message, "progress": 100.0 if self.state == "done" else p.percent,
                "file_name": p.file_name, "file_size": p.file_total, "downloaded_size": p.file_done,
                "files_done": p.files_done, "files_total": p.files_total, "error": self.error, "model": self.model}


class GalleryService:
    def __init__(self, installer: Installer, on_installed: Callable[[ModelPlan], Awaitable[None]],
                 on_removed: Callable[[str], Awaitable[None]], *, on_demand: bool = False) -> None:
        self.installer = installer
        self.on_installed = on_installed
        self.on_removed = on_removed
        self.on_demand = on_demand
        self._reading: asyncio.Task | None = None  # a background read of the indexes
        self.jobs: dict[str, InstallJob] = {}
        self._by_ref: dict[str, InstallJob] = {}  # the live job per entry: one install at a time each
        self._lock = asyncio.Lock()  # one install at a time: they share the disk and the network
        self.aliases: dict[str, str] = {}  # a request's model name → the model its install made
        self._tasks: set[asyncio.Task] = set()

    def submit(self, target: str | GalleryEntry, *, name: str | None = None,
               overrides: dict[str, Any] | None = None) -> InstallJob:
        """A job installing ``target`` (an entry reference, or an entry made from a URL); the
        running one if that entry is already being installed."""
        ref = target.id if isinstance(target, GalleryEntry) else target
        live = self._by_ref.get(ref)
        if live is not None and live.state in ("queued", "running") and name is None and not overrides:
            return live
        pending = sum(job.state in ("queued", "running") for job in self.jobs.values())
        if pending >= MAX_PENDING_JOBS:
            raise OpenAIError(429, f"{pending} installs are queued already; try again later",
                              code="too_many_installs", retry_after=30)
        job = InstallJob(uuid.uuid4().hex, ref, name, overrides or {}, target)
        self.jobs[job.id] = job
        self._by_ref[ref] = job
        self._forget_old_jobs()
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, job: InstallJob) -> None:
        async with self._lock:
            job.state = "running"
            try:
                result = await asyncio.to_thread(self.installer.install, job.target, name=job.name,
                                                 overrides=job.overrides, progress=job.progress,
                                                 skip_installed=True)
                job.model = result.name
                if job.ref != result.name and job.name is None:
                    self.aliases[job.ref] = result.name
                if result.model is not None:
                    await self.on_installed(result.model)
                job.state = "done"
                log.info("installed %s as %s", job.ref, result.name)
            except (GalleryError, OpenAIError) as exc:
                job.state, job.error = "failed", str(exc)
                log.error("install of %s failed: %s", job.ref, exc)
            except Exception as exc:  # a bug: the job reports it rather than hanging forever
                job.state, job.error = "failed", f"internal error: {type(exc).__name__}: {exc}"
                log.exception("install of %s failed", job.ref)
            finally:
                job.done.set()

    def _forget_old_jobs(self) -> None:
        finished = [j for j in self.jobs.values() if j.state in ("done", "failed")]
        for job in finished[: max(0, len(self.jobs) - MAX_KEPT_JOBS)]:
            del self.jobs[job.id]

    def on_demand_ref(self, model: str) -> str | None:
        """What to install for a request's unknown ``model``: a gallery entry's id, or the
        Hugging Face file it names; None when it names neither."""
        galleries = self.installer.galleries
        readable = galleries.loaded_only()  # never a fetch on the request path
        if len(readable.specs) < len(galleries.specs):
            self._read_indexes_soon()
        try:
            entry = readable.find(model)
        except GalleryError:
            return None
        if entry.gallery == HUGGINGFACE:
            if not self.installer.allow_unverified:
                raise OpenAIError(400, f"model {model!r} is not installed; installing Hugging Face files on demand "
                                       "needs the server's --allow-unverified (they come without a checksum)",
                                  param="model", code="model_not_found")
            return model
        return entry.id

    def _read_indexes_soon(self) -> None:
        """Read the indexes not read yet in a thread, one such attempt at a time (a failed one
        is retried a minute later at the soonest: ``Galleries``)."""
        if self._reading is not None and not self._reading.done():
            return

        def read() -> None:
            try:
                self.installer.galleries.all()
            except GalleryError as exc:
                log.warning("cannot read the galleries for on-demand installs: %s", exc)

        self._reading = asyncio.get_running_loop().create_task(asyncio.to_thread(read))  # held: weak refs

    def served_name(self, requested: str) -> str:
        """The model name an on-demand install gave ``requested`` (``owner/repo/file.gguf`` → ``file``)."""
        return self.aliases.get(requested, requested)

    def endpoints(self) -> list[Endpoint]:
        """LocalAI's gallery paths (served without /v1, as LocalAI serves them)."""
        return [
            Endpoint("/models/available", self.available, Operation(
                "Gallery entries, each marked installed or not", response={"type": "array"}, errors=("502",)),
                versioned=False),
            Endpoint("/models/apply", self.apply, Operation(
                "Install a gallery entry or a URL: answers a job to poll", ApplyRequest,
                errors=("400", "409", "413", "429", "502")), ("POST",), versioned=False),
            Endpoint("/models/jobs", self.list_jobs, Operation("Install jobs", response={"type": "array"}),
                     versioned=False),
            Endpoint("/models/jobs/{uuid}", self.job_status, Operation("One install job's progress", errors=("404",)),
                     versioned=False),
            Endpoint("/models/delete/{name}", self.delete, Operation(
                "Delete an installed model and the files its install created", errors=("400", "404")),
                ("POST", "DELETE"), versioned=False),
        ]

    # --- routes ------------------------------------------------------------------------------

    async def available(self, request: Request) -> Response:
        galleries, failures = await asyncio.to_thread(self.installer.galleries.readable)
        if failures and not galleries:
            raise OpenAIError(502, "cannot read the galleries: " + "; ".join(failures.values()),
                              code="gallery_unavailable")
        try:
            installed = set(self.installer.installed().values())
        except GalleryError as exc:
            raise OpenAIError(502, f"cannot read the install records: {exc}", code="gallery_unavailable") from None
        for name, why in failures.items():
            log.warning("gallery %s left out of /models/available: %s", name, why)
        # LocalAI's answer is a bare list: the galleries left out are named in a header.
        summary = "; ".join(f"{n}: {w}" for n, w in failures.items()).encode("ascii", "replace").decode()
        headers = {"x-gallery-errors": " ".join(summary.split())[:2000]} if failures else None
        return JSONResponse([{**entry.summary(), "installed": entry.id in installed}
                             for gallery in galleries for entry in gallery.entries], headers=headers)

    async def apply(self, request: Request) -> Response:
        body = parse_body(await read_body(request, MAX_APPLY_BODY), ApplyRequest)
        try:  # resolve and compile now: a bad id or override is the client's 400, not a failed job
            if body.url is not None:
                ref: str | GalleryEntry = url_entry(body.url, body.name, body.overrides, body.files)
                name, overrides = None, None  # already in the entry
            else:
                ref, name, overrides = self.installer.galleries.find(body.id).id, body.name, body.overrides
            await asyncio.to_thread(self.installer.resolve, ref, name=name, overrides=overrides)
        except GalleryError as exc:
            raise OpenAIError(400, str(exc), param="url" if body.url else "id") from None
        job = self.submit(ref, name=name, overrides=overrides)
        return JSONResponse({"uuid": job.id, "status": str(request.url_for("job_status", uuid=job.id))})

    async def list_jobs(self, request: Request) -> Response:
        return JSONResponse([job.status() for job in self.jobs.values()])

    async def job_status(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["uuid"])
        if job is None:
            raise OpenAIError(404, "no such install job", param="uuid", code="job_not_found")
        return JSONResponse(job.status())

    async def delete(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            removed = await asyncio.to_thread(self.installer.remove, name)
        except GalleryError as exc:
            raise OpenAIError(404 if "no installed model" in str(exc) else 400, str(exc), param="name") from None
        await self.on_removed(name)
        return JSONResponse({"deleted": name, "files": len(removed)})
