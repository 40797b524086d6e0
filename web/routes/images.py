"""Image bytes for Label Studio (and later the dashboard), behind signed, expiring URLs.

``GET /images/{image_id}?exp=...&sig=...``: the id is looked up in the database and the file
comes from the image's stored location; nothing in the request is ever used as a path. Images
whose location is an http(s) URL are answered with a redirect to it.
"""

from __future__ import annotations

import mimetypes
import time
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlparse

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, RedirectResponse, Response

from annotator.config import Settings
from annotator.db.models import Image
from annotator.signing import verify_image
from web.deps import SessionDep, SettingsDep

router = APIRouter(tags=["images"])

# Label Studio shows the image in the reviewer's browser, from another origin. The signature is
# the authorisation, so any origin may read the bytes.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Cross-Origin-Resource-Policy": "cross-origin",
}


def _local_file(uri: str, settings: Settings) -> Path | None:
    path = Path(unquote(urlparse(uri).path)) if uri.startswith("file://") else Path(uri)
    candidates = [path] if path.is_absolute() else [settings.media_root / path, path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


@router.get(
    "/images/{image_id}",
    name="image",
    summary="Image bytes behind a signed URL (Label Studio)",
    response_class=FileResponse,
    responses={
        200: {"content": {"image/*": {}}},
        307: {"description": "The image is stored at a URL."},
        403: {"description": "Invalid or expired signature."},
        404: {"description": "No such image, or its file is missing."},
    },
)
@router.head("/images/{image_id}", include_in_schema=False)
def get_image(
    image_id: int,
    exp: Annotated[int, Query(description="Expiry, unix seconds.")],
    sig: Annotated[str, Query(max_length=128, description="Signature of (image_id, exp).")],
    session: SessionDep,
    settings: SettingsDep,
) -> Response:
    """The image's bytes, if the signature is valid and not expired."""
    if not verify_image(image_id, exp, sig, settings.webhook_secret):
        raise HTTPException(403, "invalid or expired image signature", headers=CORS_HEADERS)
    image = session.get(Image, image_id)
    if image is None:
        raise HTTPException(404, f"no image {image_id}", headers=CORS_HEADERS)
    if image.uri.startswith(("http://", "https://")):
        return RedirectResponse(image.uri, status_code=307, headers=CORS_HEADERS)
    path = _local_file(image.uri, settings)
    if path is None:
        raise HTTPException(404, f"the file of image {image_id} is missing", headers=CORS_HEADERS)
    remaining = max(0, min(exp - int(time.time()), 3600))
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(
        path,
        media_type=media_type,
        headers={**CORS_HEADERS, "Cache-Control": f"private, max-age={remaining}"},
    )
