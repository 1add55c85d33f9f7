"""worker/: the image's Dockerfile read instruction by instruction (no image can be built here: no Docker
engine), and its entrypoint run with stand-ins for the rivers commands on PATH."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path, PurePosixPath

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "worker"
ENTRYPOINT = WORKER / "entrypoint.sh"
Instruction = tuple[str, str]


def instructions() -> list[Instruction]:
    """(INSTRUCTION, arguments) of worker/Dockerfile, continuation lines joined, comments dropped."""
    joined, pending = [], ""
    for line in (WORKER / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined.append(pending + line.strip())
        pending = ""
    assert not pending, "the Dockerfile ends on a continuation line"
    parsed = []
    for text in joined:
        keyword, _, rest = text.partition(" ")
        parsed.append((keyword.upper(), rest.strip()))
    return parsed


def copies(parsed: list[Instruction]) -> list[tuple[list[str], str, str]]:
    """(sources, destination, WORKDIR at that point) of every COPY, flags dropped."""
    found, workdir = [], "/"
    for keyword, rest in parsed:
        if keyword == "WORKDIR":
            workdir = str(PurePosixPath(workdir) / rest)
        elif keyword == "COPY":
            words = [word for word in shlex.split(rest) if not word.startswith("--")]
            found.append((words[:-1], words[-1], workdir))
    return found


def test_slim_python_base() -> None:
    parsed = instructions()
    assert [rest for keyword, rest in parsed if keyword == "FROM"] == ["python:3.11-slim"]


def test_runs_as_a_non_root_user_matching_the_manifests() -> None:
    parsed = instructions()
    users = [(index, rest) for index, (keyword, rest) in enumerate(parsed) if keyword == "USER"]
    assert users, "no USER: the image would run as root"
    index, user = users[-1]
    name, _, group = user.partition(":")
    assert name not in ("root", "0") and group not in ("root", "0"), user
    assert name.isdigit(), "a numeric uid lets Kubernetes verify runAsNonRoot"
    later = [keyword for keyword, _ in parsed[index + 1:]]
    assert "RUN" not in later and later[-2:] == ["ENTRYPOINT", "CMD"], later
    created = " ".join(rest for keyword, rest in parsed if keyword == "RUN")
    assert f"useradd --system --uid {name} --gid {group}" in created

    # The manifests run every rivers container as this very uid (deploy/base).
    for path in ("coordinator.yaml", "worker-parallel.yaml", "launcher.yaml"):
        [deployment] = yaml.safe_load_all((ROOT / "deploy" / "base" / path).read_text())
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == int(name), path
        assert pod["securityContext"]["runAsGroup"] == int(group), path
        assert pod["containers"][0]["securityContext"]["runAsUser"] == int(name), path


def test_installs_the_project_and_the_examples() -> None:
    parsed = instructions()
    installs = [(index, rest) for index, (keyword, rest) in enumerate(parsed)
                if keyword == "RUN" and "pip install" in rest]
    assert len(installs) == 1
    index, command = installs[0]
    target = shlex.split(command.split("pip install", 1)[1].split("&&")[0])
    assert target == [".[kubernetes]"], "the project from the build context, with the launcher's kubernetes client"

    before = copies(parsed[:index])
    workdir = next(rest for keyword, rest in reversed(parsed[:index]) if keyword == "WORKDIR")
    copied = {source: (destination, where) for sources, destination, where in before for source in sources}
    assert {"pyproject.toml", "README.md", "rivers"} <= set(copied)  # README.md: pyproject's `readme`
    for source in ("pyproject.toml", "rivers"):
        destination, where = copied[source]
        assert str(PurePosixPath(where) / destination).startswith(workdir), (source, destination)
    assert (ROOT / "pyproject.toml").is_file() and 'name = "rivers"' in (ROOT / "pyproject.toml").read_text()

    examples = [destination for sources, destination, _ in copies(parsed) if sources == ["examples"]]
    assert examples == ["/app/examples"]
    env = " ".join(rest for keyword, rest in parsed if keyword == "ENV")
    assert "PYTHONPATH=/app" in env  # `--repo examples.demo:repo` imports from there
    assert (ROOT / "examples" / "demo.py").is_file()


def test_every_copied_path_passes_the_dockerignore() -> None:
    ignore = (WORKER / "Dockerfile.dockerignore").read_text().split("\n")
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*"  # everything else stays out of the build context (.venv, .git, tests ...)
    included = {pattern[1:].rstrip("/") for pattern in patterns if pattern.startswith("!")}
    for sources, _, _ in copies(instructions()):
        for source in sources:
            assert source in included, source
            assert (ROOT / source).exists(), source


def test_the_entrypoint_exists_and_is_the_images_entrypoint() -> None:
    parsed = instructions()
    [entrypoint] = [json.loads(rest) for keyword, rest in parsed if keyword == "ENTRYPOINT"]
    [cmd] = [json.loads(rest) for keyword, rest in parsed if keyword == "CMD"]
    assert cmd == ["worker"]
    assert len(entrypoint) == 1
    assert [destination for sources, destination, _ in copies(parsed) if sources == ["worker/entrypoint.sh"]] == \
        entrypoint
    assert "COPY --chmod=0755 worker/entrypoint.sh" in (WORKER / "Dockerfile").read_text()
    assert ENTRYPOINT.is_file() and os.access(ENTRYPOINT, os.X_OK)
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    subprocess.run(["sh", "-n", str(ENTRYPOINT)], check=True)


@pytest.fixture
def stub_path(tmp_path: Path) -> Path:
    """rivers-coordinator and rivers-worker that print their own name and arguments, one per line."""
    for name in ("rivers-coordinator", "rivers-worker"):
        stub = tmp_path / name
        stub.write_text('#!/bin/sh\nbasename "$0"\nfor arg in "$@"; do echo "$arg"; done\n')
        stub.chmod(0o755)
    return tmp_path


def entrypoint(stub_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    sh = shutil.which("sh")
    assert sh is not None
    path = f"{stub_path}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run([sh, str(ENTRYPOINT), *args], capture_output=True, text=True, timeout=30,
                          env={"PATH": path, **env})


@pytest.mark.parametrize(("args", "env", "argv"), [
    (["coordinator"], {"RIVERS_REPO": "examples.demo:repo"}, ["rivers-coordinator", "--repo", "examples.demo:repo"]),
    (["worker"], {}, ["rivers-worker", "--executor", "parallel"]),
    ([], {"RIVERS_CONCURRENCY": "3"}, ["rivers-worker", "--executor", "parallel", "--concurrency", "3"]),
    (["worker", "--burst"], {}, ["rivers-worker", "--executor", "parallel", "--burst"]),
    (["launcher"], {}, ["rivers-worker", "--executor", "kubernetes"]),
    (["step", "run1:asset a"], {}, ["rivers-worker", "--executor", "kubernetes", "--step", "run1:asset a"]),
    (["rivers-worker", "--executor", "kubernetes", "--step", "s1"], {},
     ["rivers-worker", "--executor", "kubernetes", "--step", "s1"]),  # a Job's own command passes through
])
def test_the_entrypoint_dispatches_each_role(stub_path: Path, args: list[str], env: dict[str, str],
                                             argv: list[str]) -> None:
    done = entrypoint(stub_path, *args, **env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == argv


def test_the_entrypoint_refuses_incomplete_roles(stub_path: Path) -> None:
    coordinator = entrypoint(stub_path, "coordinator")
    assert coordinator.returncode != 0 and "RIVERS_REPO" in coordinator.stderr
    step = entrypoint(stub_path, "step")
    assert step.returncode == 2 and "usage" in step.stderr
