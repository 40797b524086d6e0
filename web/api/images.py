"""Images for people with a token: bytes, thumbnails, and the image with its pairs and masks.

Images are named by id only; the file comes from the image's stored location (never from the
request). Label Studio uses the signed URLs of :mod:`web.routes.images` instead.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import FileResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from annotator.config import Settings
from annotator.db import mining
from annotator.services import browse
from annotator.thumbnails import SIZES, thumbnail
from web.api.schemas import ImageView, json_response
from web.deps import ReaderDep, SessionDep, SettingsDep
from web.routes.images import _local_file

router = APIRouter(tags=["images"])

ImageId = Annotated[int, Path(ge=1, le=2**62, description="Image id.")]
CACHE = {"Cache-Control": "private, max-age=3600"}


@router.get("/images/{image_id}", response_model=ImageView, summary="An image with its masks")
async def image_view(image_id: ImageId, reader: ReaderDep) -> Response:
    """The image, every pair on it (positives with masks as COCO RLE, negatives, the rest) and
    each mask's score and provenance."""
    return json_response(await reader(browse.image_view, image_id))


def _file(image_id: int, session: Session, settings: Settings) -> tuple[Any, Any]:
    image = mining.get_image(session, image_id)
    if image.uri.startswith(("http://", "https://")):
        return image, None
    path = _local_file(image.uri, settings)
    if path is None:
        raise HTTPException(404, f"the file of image {image_id} is missing")
    return image, path


@router.get(
    "/images/{image_id}/file",
    response_class=FileResponse,
    summary="The image's bytes",
    responses={200: {"content": {"image/*": {}}}, 307: {"description": "Stored at a URL."}},
)
def image_file(image_id: ImageId, session: SessionDep, settings: SettingsDep) -> Response:
    image, path = _file(image_id, session, settings)
    if path is None:
        return RedirectResponse(image.uri, status_code=307)
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return FileResponse(path, media_type=media_type, headers=CACHE)


@router.get(
    "/images/{image_id}/thumbnail",
    response_class=FileResponse,
    summary="A JPEG thumbnail",
    responses={200: {"content": {"image/jpeg": {}}}, 307: {"description": "Stored at a URL."}},
)
async def image_thumbnail(
    image_id: ImageId,
    reader: ReaderDep,
    settings: SettingsDep,
    size: Annotated[int, Query(ge=16, le=512, description="Longest side, pixels.")] = 256,
) -> Response:
    """Longest side ``size`` pixels, rounded up to 128, 256 or 512 (the cached sizes); made
    once, then served from the cache. Never enlarged."""
    snapped = next(s for s in SIZES if s >= size)
    url, thumb, stat = await reader(_thumbnail, image_id, settings, snapped)
    if url is not None:
        return RedirectResponse(url, status_code=307)
    return FileResponse(thumb, media_type="image/jpeg", headers=CACHE, stat_result=stat)


def _thumbnail(
    session: Session, image_id: int, settings: Settings, size: int
) -> tuple[str | None, FilePath, os.stat_result | None]:
    """(the image's URL when it is stored at one, else None; the thumbnail file; its stat),
    made in the worker thread that looked the image up."""
    image, path = _file(image_id, session, settings)
    if path is None:
        return image.uri, FilePath(), None
    thumb = thumbnail(path, settings.media_root / "thumbnails", image.id, size)
    return None, thumb, thumb.stat()
