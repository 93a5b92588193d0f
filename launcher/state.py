"""What the request handlers share, typed (Starlette's ``app.state`` holds one ``ServerState``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from modelyard.compiler.plan import LaunchPlan

if TYPE_CHECKING:
    from .gallery_api import GalleryService
    from .generation import Admission, Pool
    from .loose_models import LooseModels
    from .metrics import Metrics
    from .responses_api import ResponseStore
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
    loose: LooseModels | None = None  # GGUF files of the models directory served on request
    adopting: asyncio.Lock = field(default_factory=asyncio.Lock)  # one adoption of a loose file at a time
    responses: ResponseStore | None = None  # the Responses API's stored responses (made on first use)


def server_state(request: Request) -> ServerState:
    return request.app.state.server
