"""Validate objects against a component schema of Clerk's OpenAPI 3.0 specs with jsonschema.

OpenAPI 3.0 is not JSON Schema: ``nullable: true`` becomes a ``null`` alternative, and
``discriminator`` (an OpenAPI hint) is dropped. ``$ref: '#/components/schemas/X'`` then resolves
inside the converted document, which serves as the root of every validation.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.openapi_schema import to_json_schema

SPEC_DIR = Path(__file__).resolve().parents[1] / "clerk-openapi"  # vendored copy of ../shared/clerk-openapi
BAPI = SPEC_DIR / "bapi-2026-05-12.yml"
WEBHOOKS = SPEC_DIR / "webhooks-2025-04-15.yml"


@functools.cache
def _components(path: Path) -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(path.read_text(), Loader=loader)  # noqa: S506 (a safe loader)
    return {"components": {"schemas": to_json_schema(doc["components"]["schemas"])}}


def validator(path: Path, name: str) -> jsonschema.Draft7Validator:
    """A validator for ``components.schemas.<name>`` of the spec at ``path``."""
    root = _components(path)
    assert name in root["components"]["schemas"], name
    return jsonschema.Draft7Validator({**root, "$ref": f"#/components/schemas/{name}"})


def errors(path: Path, name: str, obj: Any) -> list[str]:
    """Every validation error of ``obj`` (empty when it is valid)."""
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(path, name).iter_errors(obj)
    ]
