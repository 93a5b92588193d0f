"""Run a launch plan: the app under uvicorn, with its worker pool."""

from __future__ import annotations

import logging

import uvicorn

from modelyard.compiler.plan import LaunchPlan

from .app import create_app
from .pool import WorkerPool

log = logging.getLogger(__name__)


def serve(plan: LaunchPlan, *, preload: bool = False, log_level: str = "info") -> None:
    """Serve until SIGINT/SIGTERM; shutting down stops every worker (no orphans)."""
    pool = WorkerPool(plan)
    app = create_app(plan, pool=pool, preload=preload)
    server = plan.server
    names = ", ".join(f"{m.name} ({m.backend})" for m in plan.models)
    log.info("serving %d model(s): %s", len(plan.models), names)
    log.info("OpenAI API at http://%s:%d/v1", server.host, server.port)
    config = uvicorn.Config(app, host=server.host, port=server.port, log_level=log_level,
                            timeout_graceful_shutdown=10, limit_concurrency=1024, timeout_keep_alive=30)
    uvicorn.Server(config).run()
