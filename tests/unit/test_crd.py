"""The committed CRD matches the models, and its schema is structural."""

from pathlib import Path

import yaml

from replytracker.crd import build_crd, render_crd

CRD_PATH = Path(__file__).resolve().parents[2] / "crds" / "messagetracker.yaml"


def test_committed_crd_matches_models():
    assert CRD_PATH.read_text() == render_crd(), "crds/messagetracker.yaml is stale: run `make crd`"


def _walk(node, path="openAPIV3Schema"):
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def test_schema_has_no_refs_or_any_of():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node, path
        assert "anyOf" not in node, path
        assert "title" not in node, path


def test_every_spec_field_has_a_description():
    schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema["properties"]["spec"], "spec"):
        assert node.get("description"), f"{path} has no description"


def test_spec_contract():
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["accountId", "threadId"]
    assert spec["properties"]["frequency"]["default"] == 1.0
    assert spec["properties"]["frequency"]["exclusiveMinimum"] is True
    assert spec["properties"]["frequency"]["minimum"] == 0
    assert spec["properties"]["accountId"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"
    assert spec["properties"]["threadId"]["x-kubernetes-validations"][0]["rule"] == "self == oldSelf"


def test_crd_names_and_columns():
    crd = yaml.safe_load(render_crd())
    assert crd["metadata"]["name"] == "messagetrackers.replytracker.dev"
    assert crd["spec"]["names"]["shortNames"] == ["mt"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Account", "Thread", "Frequency", "Phase", "Last Check", "Age"]
