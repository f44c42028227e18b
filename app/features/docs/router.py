"""``GET /docs`` (Swagger UI), its assets and ``GET /openapi.json``; none in the spec itself.

The Swagger UI JavaScript and CSS come from the ``fastapi-offline`` package (kept current with
swagger-ui-dist releases) and are served by the app, so the page works without a CDN, offline
or behind a firewall. ReDoc is not served: one docs page is enough.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from app.core.exceptions import DocsNotFoundError
from app.features.docs.dependencies import require_docs_access, require_docs_enabled

DOCS_URL = "/docs"
OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
ASSETS_URL = "/docs/assets"
#: The folder of the Swagger UI release shipped in ``fastapi-offline``.
ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
#: The assets served, by file name, with their content types (RFC 9239 for JavaScript).
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}

router = APIRouter(include_in_schema=False)


@router.get(OPENAPI_URL, dependencies=[Depends(require_docs_access)])
async def openapi(request: Request) -> JSONResponse:
    """The app's OpenAPI document (built once, then cached by FastAPI)."""
    return JSONResponse(request.app.openapi())


@router.get(DOCS_URL, dependencies=[Depends(require_docs_access)])
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on :data:`OPENAPI_URL`, with scripts and styles from :data:`ASSETS_URL`."""
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}{OPENAPI_URL}",
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT_URL}",
        swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
    )


@router.get(OAUTH2_REDIRECT_URL, dependencies=[Depends(require_docs_enabled)])
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    """The OAuth2 redirect page of Swagger UI (FastAPI's)."""
    return get_swagger_ui_oauth2_redirect_html()


@router.get(f"{ASSETS_URL}/{{name}}", dependencies=[Depends(require_docs_enabled)])
async def swagger_ui_asset(name: Annotated[str, PathParam(max_length=64)]) -> FileResponse:
    """One file of the Swagger UI release (public unless ``APP_DOCS=off``: it is the same
    for every deployment and says nothing about this API).

    Raises:
        DocsNotFoundError: not one of :data:`ASSET_TYPES` (404).
    """
    media_type = ASSET_TYPES.get(name)
    if media_type is None:
        raise DocsNotFoundError
    return FileResponse(ASSETS_DIR / name, media_type=media_type)
