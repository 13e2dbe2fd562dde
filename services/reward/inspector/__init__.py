"""``GET /inspect``: a page to look at token rewards (issue 31).

Static files shipped in this package, no external asset and no build step: ``page.html``,
``page.js`` and ``page.css``. The page itself holds no data and is public like ``/docs``; every
call it makes for data (``/v1/token-rewards``, ``/v1/rollouts/{id}/result``) carries the team's
key, which the user types into the page (kept in the tab's sessionStorage only). A strict
Content-Security-Policy allows this origin's script and style only, and the script writes all
model text with ``textContent``, so a prediction holding HTML or script shows as text.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter(include_in_schema=False)
PAGE_PATHS = frozenset({"/inspect", "/inspect/page.js", "/inspect/page.css"})
_TYPES = {"page.html": "text/html", "page.js": "text/javascript", "page.css": "text/css"}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _asset(name: str) -> Response:
    body = files(__package__).joinpath(name).read_bytes()
    headers = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff",
               "Cache-Control": "no-cache"}  # fmt: skip
    return Response(body, media_type=f"{_TYPES[name]}; charset=utf-8", headers=headers)


@router.get("/inspect")
async def page() -> Response:
    return _asset("page.html")


@router.get("/inspect/page.js")
async def script() -> Response:
    return _asset("page.js")


@router.get("/inspect/page.css")
async def style() -> Response:
    return _asset("page.css")
