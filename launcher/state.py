"""What the request handlers share, typed (Starlette's ``app.state`` holds one ``ServerState``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request

from modelyard.compiler.plan import LaunchPlan

if TYPE_CHECKING:
    from .gallery_api import GalleryService
    from .generation import Admission, Pool
    from .metrics import Metrics
    from .routes import Endpoint


@dataclass
class ServerState:
    plan: LaunchPlan  # replaced (never mutated) as gallery installs add and remove models
    pool: Pool
    admission: Admission
    metrics: Metrics
    endpoints: tuple[Endpoint, ...]
    gallery: GalleryService | None = None
    auth: bool = False  # API keys are required
    ready: bool = False  # start-up installs and preloading are done


def server_state(request: Request) -> ServerState:
    return request.app.state.server
