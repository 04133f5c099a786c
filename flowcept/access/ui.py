"""The browser UI of ``flowcept serve``: static pages from ``flowcept/access/ui/``
served at ``/ui/`` (``/`` redirects there).

The pages hold no data and need no token to load; everything they show they
fetch from the public JSON routes (``/api/v1/...``) with the bearer token the
user typed in, kept in the tab's sessionStorage.  No asset comes from the
network (compute and login nodes are often offline), and a strict
Content-Security-Policy lets the pages run only their own scripts and talk
only to this server.
"""
from __future__ import annotations

import os
from importlib import resources
from typing import Dict, Tuple

PREFIX = "/ui"
MEDIA = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".txt": "text/plain; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_public(path: str) -> bool:
    """Paths that load without the bearer token: the page and its assets (no data)."""
    return path == "/" or path == PREFIX or path.startswith(PREFIX + "/")


def assets() -> Dict[str, Tuple[bytes, str]]:
    """name -> (bytes, media type) of every file in the assets folder, read once."""
    folder = resources.files("flowcept.access").joinpath("ui")
    out = {}
    for item in folder.iterdir():
        ext = os.path.splitext(item.name)[1]
        if item.is_file() and ext in MEDIA:
            out[item.name] = (item.read_bytes(), MEDIA[ext])
    if "index.html" not in out:
        raise FileNotFoundError(f"the web UI's index.html is missing from {folder}: reinstall flowcept")
    return out


def mount(app) -> None:
    """Adds ``/`` (redirect), ``/ui/`` and ``/ui/{name}`` to a FastAPI app."""
    from fastapi.responses import RedirectResponse, Response

    files = assets()

    def send(name: str):
        if name not in files:
            return Response('{"error": "no such file in the web UI"}', status_code=404,
                            media_type="application/json")
        body, media = files[name]
        return Response(body, media_type=media, headers=HEADERS)

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse(PREFIX + "/")

    @app.get(PREFIX, include_in_schema=False)
    def bare():
        return RedirectResponse(PREFIX + "/")

    @app.get(PREFIX + "/", include_in_schema=False)
    def index():
        return send("index.html")

    @app.get(PREFIX + "/{name}", include_in_schema=False)
    def asset(name: str):
        return send(name)
