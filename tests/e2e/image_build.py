"""Replay the Dockerfile's builder stage without Docker, for tests on machines with no Docker engine.

``replay_stage`` runs a stage's ``ENV``, ``WORKDIR``, ``COPY`` and ``RUN``
instructions with the host's Python. A temporary folder takes the place of the
image's root file system, so an absolute path in the image, such as
``/opt/venv``, becomes ``<root>/opt/venv``. ``COPY`` takes its files from the
build context as ``.dockerignore`` filters it, with Docker's matching rules.
Any other instruction, or a flag such as ``COPY --from``, raises
``UnsupportedInstruction``, so a Dockerfile change that the replay cannot
follow fails the tests instead of being skipped.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from dockerfile_parse import DockerfileParser


class UnsupportedInstruction(Exception):
    """A Dockerfile instruction that ``replay_stage`` cannot run outside Docker."""


@dataclass
class Stage:
    """One ``FROM`` section of a Dockerfile: its name (or None), base image and instructions."""

    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, instruction: str) -> list[str]:
        """Return the arguments of every ``instruction`` (upper case) in this stage, in order."""
        return [value for name, value in self.instructions if name == instruction]


def read_stages(dockerfile: Path) -> list[Stage]:
    """Split a Dockerfile into its stages, with build arguments in ``FROM`` already substituted."""
    parser = DockerfileParser(path=str(dockerfile))
    base_images = iter(parser.parent_images)
    stages: list[Stage] = []
    for entry in parser.structure:
        instruction, value = entry["instruction"], entry["value"]
        if instruction == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(name=name, base=next(base_images)))
        elif instruction != "COMMENT" and stages:
            stages[-1].instructions.append((instruction, value))
    return stages


# --- .dockerignore -------------------------------------------------------------


@dataclass(frozen=True)
class _IgnorePattern:
    text: str
    regex: re.Pattern[str]
    exception: bool


def _compile_ignore_pattern(line: str) -> _IgnorePattern:
    exception = line.startswith("!")
    text = os.path.normpath(line[1:] if exception else line).lstrip("/")
    parts: list[str] = []
    index = 0
    while index < len(text):
        if text.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif text.startswith("**", index):
            parts.append(".*")
            index += 2
        elif text[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif text[index] == "?":
            parts.append("[^/]")
            index += 1
        else:
            parts.append(re.escape(text[index]))
            index += 1
    return _IgnorePattern(text=text, regex=re.compile("".join(parts) + r"\Z"), exception=exception)


class DockerIgnore:
    """The rules of a ``.dockerignore`` file.

    Docker tests every pattern in order against a path and each of its parent
    folders, and the last pattern that matches decides. A pattern that starts
    with ``!`` adds back what earlier ones excluded. ``[...]`` character
    classes are not supported here.
    """

    def __init__(self, text: str) -> None:
        lines = (line.strip() for line in text.splitlines())
        self._patterns = [
            _compile_ignore_pattern(line) for line in lines if line and not line.startswith("#")
        ]

    def excludes(self, relative_path: str) -> bool:
        """Return whether ``relative_path`` (with ``/`` separators) stays out of the build context."""
        candidates = [relative_path]
        parent = os.path.dirname(relative_path)
        while parent:
            candidates.append(parent)
            parent = os.path.dirname(parent)
        excluded = False
        for pattern in self._patterns:
            if any(pattern.regex.match(candidate) for candidate in candidates):
                excluded = not pattern.exception
        return excluded

    def _may_add_back_under(self, folder: str) -> bool:
        return any(
            pattern.exception and (pattern.text.startswith(folder + "/") or "*" in pattern.text)
            for pattern in self._patterns
        )

    def context_files(self, context: Path) -> list[str]:
        """Return the files of ``context`` that Docker would send, as sorted relative paths."""
        files: list[str] = []
        for folder, subfolders, names in os.walk(context):
            relative_folder = os.path.relpath(folder, context)
            prefix = "" if relative_folder == "." else relative_folder + "/"
            # Skip folders such as .venv and .git that no "!" pattern can add back.
            subfolders[:] = [
                name
                for name in subfolders
                if not self.excludes(prefix + name) or self._may_add_back_under(prefix + name)
            ]
            files.extend(prefix + name for name in names if not self.excludes(prefix + name))
        return sorted(files)


# --- replay ----------------------------------------------------------------------


@dataclass
class ReplayResult:
    """Where a replayed stage left its files, and the output of its RUN commands."""

    root: Path
    env: dict[str, str]
    log: str

    def host_path(self, image_path: str) -> Path:
        """Return the host path that corresponds to the absolute ``image_path``."""
        return self.root / image_path.lstrip("/")


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda match: env.get(match.group(1) or match.group(2), ""),
        value,
    )


def replay_stage(
    stage: Stage,
    *,
    context: Path,
    root: Path,
    base_env: dict[str, str],
    timeout: float,
) -> ReplayResult:
    """Run ``stage`` with ``root`` as the image's root folder and ``base_env`` as the base image's environment.

    ``timeout`` is in seconds for each RUN command. Raises
    ``subprocess.CalledProcessError`` when a RUN command fails, with its
    output, and ``UnsupportedInstruction`` as described in the module.
    """
    ignore_file = context / ".dockerignore"
    ignore = DockerIgnore(ignore_file.read_text() if ignore_file.is_file() else "")
    sent = set(ignore.context_files(context))
    env = dict(base_env)
    workdir = root
    log: list[str] = []

    for instruction, value in stage.instructions:
        if instruction == "ARG":
            continue
        if instruction == "ENV":
            for assignment in shlex.split(value):
                key, equals, raw = assignment.partition("=")
                if not equals:
                    raise UnsupportedInstruction(f"ENV without KEY=VALUE is not replayed: ENV {value}")
                # An absolute path points into the image, which lives under root here.
                env[key] = str(root / raw.lstrip("/")) if raw.startswith("/") else _expand(raw, env)
        elif instruction == "WORKDIR":
            workdir = root / _expand(value, env).lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            _copy(value, sent=sent, context=context, root=root, workdir=workdir)
        elif instruction == "RUN":
            if value.startswith("["):
                raise UnsupportedInstruction(f"RUN in exec form is not replayed: {value}")
            log.append(f"$ {value}")
            result = subprocess.run(
                ["/bin/sh", "-c", value],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            log.append(result.stdout + result.stderr)
            if result.returncode != 0:
                raise subprocess.CalledProcessError(
                    result.returncode, value, output="\n".join(log), stderr=result.stderr
                )
        else:
            raise UnsupportedInstruction(f"{instruction} is not replayed: {instruction} {value}")
    return ReplayResult(root=root, env=env, log="\n".join(log))


def _copy(value: str, *, sent: set[str], context: Path, root: Path, workdir: Path) -> None:
    words = shlex.split(value)
    if any(word.startswith("--") for word in words) or len(words) < 2:
        raise UnsupportedInstruction(f"COPY with flags or without a destination is not replayed: COPY {value}")
    *sources, destination = words
    target = root / destination.lstrip("/") if destination.startswith("/") else workdir / destination

    for source in sources:
        source = os.path.normpath(source)
        if (context / source).is_dir():
            # Docker copies the folder's content, not the folder itself.
            inside = [path for path in sent if path.startswith(source + "/")]
            if not inside:
                raise FileNotFoundError(f"COPY {value}: {source} has no files in the build context")
            for path in inside:
                _copy_file(context / path, target / os.path.relpath(path, source))
        elif source in sent:
            name = os.path.basename(source)
            _copy_file(context / source, target / name if destination.endswith("/") else target)
        else:
            raise FileNotFoundError(f"COPY {value}: {source} is not in the build context")


def _copy_file(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, destination)
