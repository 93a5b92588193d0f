"""Run a launch plan: the app under uvicorn, with its worker pool."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import uvicorn

from modelyard.compiler.plan import LaunchPlan

from .app import create_app
from .connections import guarded_protocol
from .installer import Installer
from .loose_models import LooseModels
from .pool import WorkerPool

log = logging.getLogger(__name__)


class KeySourceError(Exception):
    pass


def resolve_api_keys(plan: LaunchPlan, env: Mapping[str, str]) -> list[str]:
    """The keys the plan's key sources hold. A configured source that yields no key is an error:
    a server meant to be protected must not start open."""
    server = plan.server
    keys: list[str] = []
    if server.api_key_env:
        found = [k.strip() for k in env.get(server.api_key_env, "").split(",") if k.strip()]
        if not found:  # unset, empty, or only commas and blanks
            raise KeySourceError(f"API keys are configured from ${server.api_key_env}, which holds no key")
        keys += found
    if server.api_key_file:
        try:
            lines = Path(server.api_key_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise KeySourceError(f"cannot read the API key file {server.api_key_file}: {exc.strerror}") from None
        found = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        if not found:
            raise KeySourceError(f"the API key file {server.api_key_file} holds no key")
        keys += found
    unusable = sum(1 for key in keys if not (key.isascii() and key.isprintable()))
    if unusable:
        # A bearer token travels in an HTTP header: printable ASCII is what every client sends as is.
        raise KeySourceError(f"{unusable} API key(s) hold characters other than printable ASCII; "
                             "HTTP clients cannot send them reliably")
    return keys


def serve(plan: LaunchPlan, *, api_keys: list[str], preload: bool = False, log_level: str = "info",
          installer: Installer | None = None, install_on_start: Sequence[str] = (),
          on_demand_installs: bool = False, gallery_api: bool = True, loose_models: LooseModels | None = None,
          console: bool = True) -> None:
    """Serve until SIGINT/SIGTERM; shutting down stops every worker (no orphans)."""
    pool = WorkerPool(plan)
    app = create_app(plan, pool=pool, preload=preload, api_keys=api_keys, installer=installer,
                     install_on_start=install_on_start, on_demand_installs=on_demand_installs,
                     gallery_api=gallery_api, loose_models=loose_models, console=console)
    server = plan.server
    names = ", ".join(f"{m.name} ({m.backend})" for m in plan.models)
    log.info("serving %d model(s): %s", len(plan.models), names or "none yet")
    if installer is not None and gallery_api:
        log.info("gallery API on (models directory %s)%s", installer.models_dir,
                 "; on-demand installs on" if on_demand_installs else "")
    log.info("OpenAI API at http://%s:%d/v1 (%s)", server.host, server.port,
             f"{len(api_keys)} API key(s) required" if api_keys else "no API key required")
    if console:
        log.info("web console at http://%s:%d/", server.host, server.port)
    # Our RequestIdMiddleware writes the access log (with request ids); uvicorn's would repeat it.
    # Connection limits are ours (launcher/connections.py): uvicorn's limit_concurrency would answer
    # a bare 503 to everyone once idle sockets fill it.
    http = guarded_protocol(server.header_timeout_s, server.max_connections, server.max_connections_per_client)
    config = uvicorn.Config(app, host=server.host, port=server.port, log_level=log_level, log_config=None,
                            access_log=False, timeout_graceful_shutdown=server.drain_timeout_s,
                            http=http, timeout_keep_alive=30)
    uvicorn.Server(config).run()
