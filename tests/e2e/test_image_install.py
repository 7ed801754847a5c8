"""The Dockerfile's builder stage, replayed without Docker, installs a working operator.

This machine has no Docker engine, so the builder stage's COPY and RUN
instructions run on the host (see image_build.py): the same pip commands with
the same lock, downloading from PyPI. The virtual environment that the final
stage would copy is then run as the image runs it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from image_build import DockerIgnore, ReplayResult, read_stages, replay_stage
from support import wait_for

from replytracker.controlplane import ControlPlane
from replytracker.fake_provider import FakeProviderServer

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"

# Timeout in seconds of one RUN command of the replay, in which pip downloads every wheel from PyPI.
RUN_TIMEOUT = 240


@pytest.fixture(scope="module")
def builder(tmp_path_factory: pytest.TempPathFactory) -> ReplayResult:
    """The builder stage replayed into a temporary root folder."""
    stages = read_stages(DOCKERFILE)
    builder_stage = next(stage for stage in stages if stage.name == "builder")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
    }
    # The base image's "python" is Python 3.11. Here the interpreter that runs the tests takes its place.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    try:
        return replay_stage(
            builder_stage,
            context=REPO_ROOT,
            root=tmp_path_factory.mktemp("image-root"),
            base_env=env,
            timeout=RUN_TIMEOUT,
        )
    except subprocess.CalledProcessError as error:
        pytest.fail(f"builder stage failed at RUN {error.cmd}:\n{error.output}")


@pytest.fixture(scope="module")
def image_venv(builder: ReplayResult) -> Path:
    """Host folder of the virtual environment that the final stage copies from the builder."""
    final = read_stages(DOCKERFILE)[-1]
    copy_from_builder = next(value for value in final.values("COPY") if value.startswith("--from=builder "))
    source = copy_from_builder.split()[1]
    return builder.host_path(source)


def run_installed(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the venv's replytracker command outside the checkout, so the source tree cannot shadow it."""
    return subprocess.run(
        [str(venv / "bin" / "replytracker"), *args],
        cwd=cwd,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- build context ---------------------------------------------------------------


def test_context_contains_copied_files() -> None:
    files = DockerIgnore((REPO_ROOT / ".dockerignore").read_text()).context_files(REPO_ROOT)

    assert "pyproject.toml" in files
    assert "requirements.lock" in files
    assert "operator/replytracker/cli.py" in files


def test_context_leaves_out_local_state() -> None:
    files = DockerIgnore((REPO_ROOT / ".dockerignore").read_text()).context_files(REPO_ROOT)
    top_level = {path.split("/")[0] for path in files}

    assert top_level == {"pyproject.toml", "requirements.lock", "operator"}
    assert not [path for path in files if "__pycache__" in path or path.endswith(".pyc")]
    assert not [path for path in files if ".egg-info/" in path]


def test_dockerignore_follows_docker_rules() -> None:
    ignore = DockerIgnore("*\n!keep\n**/*.pyc\n!keep/**/special.pyc\n")

    assert ignore.excludes(".venv/bin/python")
    assert not ignore.excludes("keep/module.py")
    assert ignore.excludes("keep/sub/other.pyc")
    assert not ignore.excludes("keep/sub/special.pyc")


# --- the installed environment -----------------------------------------------------


@pytest.mark.e2e
def test_builder_removes_installers(image_venv: Path, tmp_path: Path) -> None:
    probe = subprocess.run(
        [
            str(image_venv / "bin" / "python"), "-c",
            "import importlib.util; print([m for m in ('pip', 'setuptools') if importlib.util.find_spec(m)])",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert probe.stdout.strip() == "[]"
    assert not (image_venv / "bin" / "pip").exists()


@pytest.mark.e2e
def test_package_imports_from_venv(image_venv: Path, tmp_path: Path) -> None:
    probe = subprocess.run(
        [str(image_venv / "bin" / "python"), "-c", "import replytracker; print(replytracker.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    module_file = Path(probe.stdout.strip())

    assert module_file.is_relative_to(image_venv)
    assert "site-packages" in module_file.parts


@pytest.mark.e2e
def test_help_lists_commands(image_venv: Path, tmp_path: Path) -> None:
    result = run_installed(image_venv, "--help", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    for command in ("run", "crd", "demo"):
        assert command in result.stdout


@pytest.mark.e2e
def test_crd_command_prints_definition(image_venv: Path, tmp_path: Path) -> None:
    result = run_installed(image_venv, "crd", cwd=tmp_path)
    crd = yaml.safe_load(result.stdout)

    assert result.returncode == 0, result.stderr
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "messagetrackers.replytracker.dev"


@pytest.fixture
def installed_operator(
    image_venv: Path,
    control_plane: ControlPlane,
    crd: str,
    namespace: str,
    provider: FakeProviderServer,
    tmp_path: Path,
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``replytracker run`` from the replayed venv, watching the test's namespace, and killed after the test if still running."""
    log_path = tmp_path / "operator.log"
    env = {
        **{key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        "KUBECONFIG": str(control_plane.kubeconfig),
        "REPLYTRACKER_API_URL": provider.api_url,
        "REPLYTRACKER_API_KEY": "test-key",
        "REPLYTRACKER_API_SECRET": "test-secret",
        # No metrics server: its default address is 0.0.0.0.
        "REPLYTRACKER_METRICS_PORT": "0",
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(image_venv / "bin" / "replytracker"), "run", "--namespace", namespace],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=15)


@pytest.mark.e2e
def test_installed_operator_starts_and_stops(
    installed_operator: tuple[subprocess.Popen[bytes], Path],
) -> None:
    process, log_path = installed_operator

    def log_text() -> str:
        return log_path.read_text(errors="replace")

    wait_for(
        lambda: "reply-tracker started" in log_text() or process.poll() is not None,
        timeout=60,
        what="the startup line of the installed operator",
    )
    assert process.poll() is None, f"operator exited with status {process.returncode}:\n{log_text()}"
    assert "reply-tracker started" in log_text()

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)

    assert process.returncode == 0, log_text()
    assert "reply-tracker stopped" in log_text()
