"""The web console (``GET /``): three static files from ``launcher/console/``, served as they are
(no build step, no CDN). They are public, being the login page: everything the console shows
it asks the API for, with the key the user gives it, so it can do nothing the API forbids.
``modelyard launch --no-console`` leaves them out."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from .routes import Endpoint, Operation

CONSOLE_DIR = Path(__file__).parent / "console"
# Each file by a fixed path: nothing a request sends names a file to read.
_FILES = {"/": ("index.html", "text/html; charset=utf-8"),
          "/console/console.js": ("console.js", "text/javascript; charset=utf-8"),
          "/console/console.css": ("console.css", "text/css; charset=utf-8")}
# The page may run only its own script and talk only to this server.
_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; frame-ancestors 'none'",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


async def _serve(request: Request) -> Response:
    name, media_type = _FILES[request.url.path]
    return FileResponse(CONSOLE_DIR / name, media_type=media_type, headers=_HEADERS)


ENDPOINTS: tuple[Endpoint, ...] = tuple(
    Endpoint(path, _serve, Operation(f"The web console ({name})", public=True, media_type=media_type.split(";")[0]),
             versioned=False)
    for path, (name, media_type) in _FILES.items())
