"""Signed, expiring URLs for image bytes (HMAC-SHA256 with the webhook secret). Pure.

Label Studio shows a task's image by URL, in the reviewer's browser. Our API serves the bytes at
``/images/{image_id}?exp=<unix seconds>&sig=<signature>``: the signature covers the image id and
the expiry, so a URL cannot be altered to another image or extended, and it stops working at
``exp``. No copy of the image goes into Label Studio.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode

__all__ = ["image_path", "sign_image", "signed_image_url", "verify_image"]


def image_path(image_id: int) -> str:
    return f"/images/{image_id}"


def sign_image(image_id: int, expires: int, secret: str) -> str:
    """The signature of (``image_id``, ``expires``): 43 URL-safe characters."""
    message = f"image:{int(image_id)}:{int(expires)}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def signed_image_url(
    base_url: str, image_id: int, secret: str, ttl_s: int, *, now: float | None = None
) -> tuple[str, int]:
    """``(url, expires)``: a URL under ``base_url`` valid for ``ttl_s`` seconds."""
    expires = int(now if now is not None else time.time()) + int(ttl_s)
    query = urlencode({"exp": expires, "sig": sign_image(image_id, expires, secret)})
    return f"{base_url.rstrip('/')}{image_path(image_id)}?{query}", expires


def verify_image(
    image_id: int, expires: int, signature: str, secret: str, *, now: float | None = None
) -> bool:
    """True when ``signature`` is ours for (``image_id``, ``expires``) and not yet expired.

    The comparison takes constant time (no timing oracle on the signature).
    """
    expected = sign_image(image_id, expires, secret)
    valid = hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
    return valid and (now if now is not None else time.time()) < expires
