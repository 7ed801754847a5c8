"""The container image's sources: Dockerfile, dependency lock, kind config, Makefile targets and scripts.

No Docker engine is needed. tests/e2e/test_image_install.py runs the
Dockerfile's install steps.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"
LOCK = REPO_ROOT / "requirements.lock"
KIND_SCRIPTS = sorted((REPO_ROOT / "tools" / "kind").glob("*.sh"))

PYTHON_IMAGE = re.compile(r"python:(?P<minor>3\.\d+)\.\d+-slim-bookworm")


def find_tool(name: str) -> Path:
    """Return a command from the test extra: next to this Python first, then on PATH."""
    beside_python = Path(sys.executable).parent / name
    if os.access(beside_python, os.X_OK):
        return beside_python
    on_path = shutil.which(name)
    if on_path is None:
        pytest.fail(f"{name} not found; install the test extra: pip install -e '.[test]'")
    return Path(on_path)


def stages() -> list[list[tuple[str, str]]]:
    """Return the Dockerfile's stages as lists of (instruction, value), each starting with its FROM."""
    result: list[list[tuple[str, str]]] = []
    for entry in DockerfileParser(path=str(DOCKERFILE)).structure:
        if entry["instruction"] == "FROM":
            result.append([])
        if entry["instruction"] != "COMMENT" and result:
            result[-1].append((entry["instruction"], entry["value"]))
    return result


def values(stage: list[tuple[str, str]], instruction: str) -> list[str]:
    return [value for name, value in stage if name == instruction]


def read_lock() -> dict[str, tuple[str, list[str]]]:
    """Return requirements.lock as {canonical name: (pinned version, hashes)}."""
    text = LOCK.read_text().replace("\\\n", " ")
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement_text, *options = line.split(" --hash=")
        requirement = Requirement(requirement_text.strip())
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"not an exact pin in requirements.lock: {line}"
        pins[canonicalize_name(requirement.name)] = (specifier.version, [option.strip() for option in options])
    return pins


def runtime_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


# --- Dockerfile ----------------------------------------------------------------


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [str(find_tool("hadolint")), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.stdout == ""
    assert result.returncode == 0, result.stderr


def test_stages_share_pinned_python_base() -> None:
    base_images = DockerfileParser(path=str(DOCKERFILE)).parent_images

    assert len(base_images) == 2
    assert base_images[0] == base_images[1]
    assert PYTHON_IMAGE.fullmatch(base_images[0]), base_images[0]


def test_builder_installs_lock_then_project() -> None:
    builder = stages()[0]
    runs = values(builder, "RUN")

    assert values(builder, "FROM")[0].endswith(" AS builder")
    assert "pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock" in runs
    assert any(run.startswith("pip install --no-cache-dir --no-deps . ") for run in runs)


def test_final_stage_copies_only_venv() -> None:
    final = stages()[-1]
    builder_env = " ".join(values(stages()[0], "ENV"))

    assert values(final, "COPY") == ["--from=builder /opt/venv /opt/venv"]
    assert "VIRTUAL_ENV=/opt/venv" in builder_env
    assert values(final, "RUN") == []
    assert values(final, "ADD") == []


def test_final_stage_runs_as_numeric_non_root() -> None:
    final = stages()[-1]

    assert values(final, "USER") == ["65532:65532"]


def test_final_stage_entrypoint_and_ports() -> None:
    final = stages()[-1]
    environment = " ".join(values(final, "ENV")).split()

    assert [json.loads(value) for value in values(final, "ENTRYPOINT")] == [["replytracker"]]
    assert [json.loads(value) for value in values(final, "CMD")] == [
        ["run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
    ]
    assert sorted(" ".join(values(final, "EXPOSE")).split()) == ["8080", "9090"]
    assert "PYTHONDONTWRITEBYTECODE=1" in environment
    assert "PYTHONUNBUFFERED=1" in environment


# --- requirements.lock -------------------------------------------------------------


def test_lock_pins_every_runtime_dependency() -> None:
    pins = read_lock()

    for requirement in runtime_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} from pyproject.toml is missing in requirements.lock; run make lock"
        version, _ = pins[name]
        assert requirement.specifier.contains(Version(version), prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside {requirement} of pyproject.toml; run make lock"
        )


def test_lock_has_hashes_for_every_pin() -> None:
    pins = read_lock()

    assert len(pins) > len(runtime_requirements())
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name} has no --hash in requirements.lock"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", value) for value in hashes), name


def test_lock_names_its_command_and_no_index() -> None:
    text = LOCK.read_text()

    assert "#    make lock\n" in text
    assert "--index-url" not in text
    assert "--find-links" not in text


def test_lock_python_matches_image_python() -> None:
    header = re.search(r"autogenerated by pip-compile with Python (\d+\.\d+)", LOCK.read_text())
    base = PYTHON_IMAGE.fullmatch(DockerfileParser(path=str(DOCKERFILE)).parent_images[0])

    assert header is not None
    assert base is not None
    assert header.group(1) == base.group("minor")


# --- kind ----------------------------------------------------------------------------


def test_kind_config_has_one_pinned_control_plane() -> None:
    config = yaml.safe_load((REPO_ROOT / "kind-config.yaml").read_text())

    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    assert [node["role"] for node in config["nodes"]] == ["control-plane"]
    assert re.fullmatch(r"kindest/node:v1\.33\.\d+(@sha256:[0-9a-f]{64})?", config["nodes"][0]["image"])


@pytest.mark.parametrize("script", KIND_SCRIPTS, ids=lambda path: path.name)
def test_kind_script_passes_shellcheck(script: Path) -> None:
    result = subprocess.run(
        [str(find_tool("shellcheck")), "--external-sources", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def fake_commands(folder: Path, *, clusters: str) -> tuple[dict[str, str], Path]:
    """Write stand-ins for kind and docker that log their arguments.

    Returns the environment that puts them first on PATH, and the path of the log.
    """
    folder.mkdir()
    log = folder / "calls.log"
    (folder / "kind").write_text(
        "#!/bin/sh\n"
        f'echo "kind $*" >> "{log}"\n'
        f'if [ "$1 $2" = "get clusters" ]; then printf "{clusters}"; fi\n'
    )
    (folder / "docker").write_text(f'#!/bin/sh\necho "docker $*" >> "{log}"\n')
    for name in ("kind", "docker"):
        (folder / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
    return env, log


def test_kind_up_creates_cluster_from_config(tmp_path: Path) -> None:
    env, log = fake_commands(tmp_path / "bin", clusters="other\\n")

    result = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "kind" / "up.sh")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    calls = log.read_text().splitlines()

    assert result.returncode == 0, result.stderr
    assert calls[-1] == (
        f"kind create cluster --name replytracker --config {REPO_ROOT / 'kind-config.yaml'} --wait 180s"
    )


def test_kind_up_keeps_existing_cluster(tmp_path: Path) -> None:
    env, log = fake_commands(tmp_path / "bin", clusters="replytracker\\n")

    result = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "kind" / "up.sh")],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "exists already" in result.stdout
    assert not [call for call in log.read_text().splitlines() if call.startswith("kind create")]


def test_kind_deploy_overrides_image(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if kubectl is None and assets:
        kubectl = str(Path(assets) / "kubectl")
    if kubectl is None:
        pytest.skip("no kubectl on PATH or in KUBEBUILDER_ASSETS to render deploy/ with")
    env = {
        **os.environ,
        "PATH": f"{Path(kubectl).parent}{os.pathsep}{os.environ['PATH']}",
        "IMAGE": "localhost:5000/reply-tracker:test",
    }

    result = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "kind" / "deploy.sh"), "--print"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    documents = [document for document in yaml.safe_load_all(result.stdout) if document]
    containers = [
        container
        for document in documents
        if document["kind"] == "Deployment"
        for container in document["spec"]["template"]["spec"]["containers"]
    ]

    assert containers
    assert {container["image"] for container in containers} == {"localhost:5000/reply-tracker:test"}
    assert {container["imagePullPolicy"] for container in containers} == {"IfNotPresent"}


def test_kind_deploy_rejects_image_without_tag() -> None:
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "tools" / "kind" / "deploy.sh"), "--print"],
        env={**os.environ, "IMAGE": "reply-tracker"},
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 2
    assert "IMAGE=reply-tracker is not of the form NAME:TAG" in result.stderr


# --- Makefile --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("image", "docker build -t reply-tracker:dev ."),
        ("kind-up", "KIND_CLUSTER=replytracker bash tools/kind/up.sh"),
        ("kind-load", "kind load docker-image reply-tracker:dev --name replytracker"),
        ("kind-deploy", "KIND_CLUSTER=replytracker IMAGE=reply-tracker:dev bash tools/kind/deploy.sh"),
        ("kind-test", "bash tools/kind/test.sh"),
        ("kind-down", "kind delete cluster --name replytracker"),
        ("lock", "pip-compile"),
    ],
)
def test_make_target_runs_command(target: str, expected: str) -> None:
    # -n prints the commands, including those of prerequisites, without running them.
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", target],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
