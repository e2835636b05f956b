"""OpenAPI 3.0 schemas -> JSON Schema, for validating with jsonschema (shared by the spec tests).

OpenAPI 3.0 is not JSON Schema: ``nullable: true`` becomes a ``null`` alternative, and
``discriminator`` (an OpenAPI hint) is dropped.
"""

from __future__ import annotations

from typing import Any


def to_json_schema(node: Any) -> Any:
    """A JSON-Schema equivalent of an OpenAPI 3.0 schema node (recursively)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if k != "discriminator"}
    if out.pop("nullable", False):
        if isinstance(out.get("type"), str) and not ({"oneOf", "anyOf", "allOf"} & out.keys()):
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        else:
            return {"anyOf": [{"type": "null"}, out]}
    return out
