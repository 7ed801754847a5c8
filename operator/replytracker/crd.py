"""Generate the MessageTracker CustomResourceDefinition from the pydantic models.

``crds/messagetracker.yaml`` is the output of ``replytracker crd`` and a unit
test fails when the two differ, so the schema cannot drift from the code.
"""

from __future__ import annotations

from typing import Any

import yaml

from replytracker import models

_DROPPED_KEYS = {"title", "default_factory"}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn one pydantic JSON schema node into a Kubernetes structural schema node.

    Kubernetes accepts neither ``$ref`` nor ``anyOf`` with a null branch, so
    references are inlined and ``Optional[X]`` becomes plain ``X``.
    """
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _resolve(merged, defs)

    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express anyOf with {len(branches)} non-null branches in a CRD")
        outer = {k: v for k, v in schema.items() if k != "anyOf"}
        if outer.get("default", "absent") is None:
            del outer["default"]
        return _resolve({**branches[0], **outer}, defs)

    node: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "properties":
            node["properties"] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key == "items":
            node["items"] = _resolve(value, defs)
        elif key == "exclusiveMinimum":
            node["minimum"] = value
            node["exclusiveMinimum"] = True
        elif key == "exclusiveMaximum":
            node["maximum"] = value
            node["exclusiveMaximum"] = True
        elif key == "enum":
            node["enum"] = value
            node.setdefault("type", "string")
        elif key == "default" and value in ([], {}):
            # Empty defaults only add noise to every stored object.
            continue
        elif key == "additionalProperties" and value is False:
            continue
        else:
            node[key] = value
    if node.get("type") == "string" and node.get("format") == "date-time":
        node["format"] = "date-time"
    return node


def _schema_of(model: type[models.BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _resolve(raw, defs)


def _status_schema() -> dict[str, Any]:
    schema = _schema_of(models.MessageTrackerStatus)
    # The operator owns status completely; defaults there would be written by
    # the API server on every read of an object that has none yet.
    _strip_defaults(schema)
    return schema


def _strip_defaults(node: dict[str, Any]) -> None:
    node.pop("default", None)
    for sub in node.get("properties", {}).values():
        _strip_defaults(sub)
    if "items" in node:
        _strip_defaults(node["items"])


def build_crd() -> dict[str, Any]:
    """Return the CRD object as a dict, ready to dump as YAML."""
    spec_schema = _schema_of(models.MessageTrackerSpec)
    spec_schema["description"] = (
        "What to watch: the account and thread, how often to check, and where to send the reply."
    )
    status_schema = _status_schema()
    status_schema["description"] = "What the operator observed. Written by the operator only."

    openapi = {
        "type": "object",
        "description": "MessageTracker watches one LinkedIn conversation for a reply through a "
        "WeLink-compatible messaging API and calls a webhook when one arrives.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
    }

    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{models.PLURAL}.{models.GROUP}"},
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": models.SINGULAR,
                "shortNames": list(models.SHORT_NAMES),
                "categories": ["replytracker"],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": openapi},
                    "selectableFields": [{"jsonPath": ".spec.accountId"}],
                    "additionalPrinterColumns": [
                        {"name": "Account", "type": "string", "jsonPath": ".spec.accountId"},
                        {"name": "Thread", "type": "string", "jsonPath": ".spec.threadId"},
                        {
                            "name": "Frequency",
                            "type": "number",
                            "jsonPath": ".spec.frequency",
                            "description": "Hours between checks.",
                        },
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Last Check", "type": "date", "jsonPath": ".status.lastCheckTime"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                }
            ],
        },
    }


def render_crd() -> str:
    """Return the CRD as the YAML text committed in ``crds/messagetracker.yaml``."""
    header = (
        "# Generated by `replytracker crd` from operator/replytracker/models.py.\n"
        "# Do not edit by hand: change the models and run `make crd`.\n"
    )
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=100)
