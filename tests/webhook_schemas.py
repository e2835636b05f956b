"""Validate events against Clerk's webhook schemas (``webhooks-2025-04-15.yml``).

The file is OpenAPI 3.0, so ``nullable: true`` is turned into JSON-schema ``null`` alternatives
before validating with jsonschema; each event type's schema is
``x-webhooks.<type>.post.requestBody.content.application/json.schema``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.openapi_schema import to_json_schema

SPEC_CANDIDATES = (
    Path(os.environ.get("CLERK_SYNC_WEBHOOK_SPEC", "/nonexistent")),
    # Vendored (MIT, from clerk/openapi-specs) so the suite never silently skips without ../shared.
    Path(__file__).resolve().parent / "clerk-openapi" / "webhooks-2025-04-15.yml",
)


def spec_path() -> Path | None:
    """Where the webhook spec is, if anywhere."""
    return next((p for p in SPEC_CANDIDATES if p.is_file()), None)


@functools.cache
def _spec() -> dict[str, Any]:
    path = spec_path()
    assert path is not None, "webhooks-2025-04-15.yml not found"
    doc: dict[str, Any] = to_json_schema(yaml.safe_load(path.read_text()))
    return doc


def webhook_types() -> list[str]:
    """Every event type the spec defines."""
    return list(_spec()["x-webhooks"])


def validate(event: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless ``event`` matches the schema of its type."""
    doc = _spec()
    pointer = "#/x-webhooks/" + event["type"] + "/post/requestBody/content/application~1json/schema"
    schema = {**doc, "$ref": pointer}
    jsonschema.Draft7Validator(schema).validate(event)


def validate_if_available(event: dict[str, Any]) -> None:
    """``validate``; the spec is vendored in ``tests/clerk-openapi`` so this never silently passes."""
    validate(event)
