"""The Label Studio webhook: ``POST /webhooks/label-studio``.

Label Studio sends ANNOTATION_CREATED / ANNOTATION_UPDATED / ANNOTATIONS_DELETED here with the
shared secret in the ``X-Annotator-Secret`` header (set when `annotator review push` registers
the webhook). Each one is applied in the request's transaction; replays change nothing. Label
Studio does not retry a failed delivery: `annotator review sync` catches up.
"""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, HTTPException

from annotator.integrations.label_studio import SECRET_HEADER
from annotator.services.review import handle_webhook
from web.deps import LabelStudioDep, SessionDep, SettingsDep

router = APIRouter(tags=["label-studio"])


@router.post(
    "/webhooks/label-studio",
    name="label_studio_webhook",
    responses={
        401: {"description": "Missing or wrong secret header."},
        404: {"description": "The task or annotation is unknown."},
        409: {"description": "Conflicts with the current state."},
        413: {"description": "Body over the size limit."},
        502: {"description": "Label Studio could not be asked."},
    },
)
def label_studio_webhook(
    payload: Annotated[Any, Body()],
    session: SessionDep,
    settings: SettingsDep,
    client: LabelStudioDep,
    secret: Annotated[str | None, Header(alias=SECRET_HEADER)] = None,
) -> dict[str, Any]:
    """Apply one webhook; answers what became of it (``applied``, ``unchanged``, ...)."""
    expected = settings.webhook_secret.encode()
    if secret is None or not hmac.compare_digest(secret.encode(), expected):
        raise HTTPException(401, f"missing or wrong {SECRET_HEADER} header")
    return handle_webhook(session, payload, client).as_dict()
