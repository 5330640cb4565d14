"""What `make run` and `make test` would run (`make -n -B`: every step, nothing executed), against
what the README's prerequisites tell a Debian/Ubuntu user to have."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest

from tests.conftest import IN_CI
from tests.tools.conftest import REPO

TEST_ONLY = {"nodejs", "npm", "curl", "chromium"}


def planned(target: str) -> str:
    if shutil.which("make") is None:
        pytest.fail("make is missing") if IN_CI else pytest.skip("make is missing")
    done = subprocess.run(["make", "-n", "-B", "--no-print-directory", "-C", str(REPO), target],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def debian_packages(commands: str) -> set[str]:
    """The Debian packages a plan needs: what it calls, and what it installs with apt-get."""
    needed = {"make"}
    if re.search(r"python3 -m venv", commands):
        needed |= {"python3", "python3-venv"}
    if re.search(r"^npm ", commands, re.MULTILINE):
        needed |= {"nodejs", "npm"}
    for installed in re.findall(r"apt-get install -y -qq ([\w .+-]+?);", commands):
        needed |= set(installed.split())
    return needed


def readme_prerequisites() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("<!-- prerequisites -->")[1].split("<!-- /prerequisites -->")[0]


def test_make_run_installs_only_what_running_needs():
    plan = planned("run")

    assert "pip install --quiet -e '.[tools]'" in plan
    assert "test]" not in plan and "npm" not in plan
    assert not debian_packages(plan) & TEST_ONLY
    assert plan.rstrip().endswith(".venv/bin/arcade run")


def test_make_test_still_installs_everything():
    plan = planned("test")

    assert "pip install --quiet -e '.[tools,test]'" in plan
    assert re.search(r"^npm install ", plan, re.MULTILINE)
    assert {"mosquitto", "mosquitto-clients", "curl"} <= debian_packages(plan)


@pytest.mark.parametrize("target", ["run", "test", "test-browser"])
def test_the_readme_prerequisites_name_every_package_make_needs(target):
    listed = readme_prerequisites()
    named = set(re.findall(r"`([\w.+-]+)`", listed))

    missing = debian_packages(planned(target)) - named
    assert not missing, f"make {target} needs {missing}, not in the README's prerequisites"
    for package in TEST_ONLY:  # said to be for the tests only
        [line] = [item for item in listed.split("\n- ") if f"`{package}`" in item]
        assert "tests only" in line, line


def test_a_missing_python3_venv_is_one_clear_line(tmp_path):
    # A python whose ensurepip is missing, as Debian's python3 is without python3-venv.
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -c ] && exit 1\nexit 0\n")
    fake.chmod(0o755)
    done = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), f"PYTHON={fake}",
                           f"VENV={tmp_path / 'venv'}", "install"],
                          capture_output=True, text=True, timeout=60)

    assert done.returncode != 0
    assert f"{fake} -m venv needs the python3-venv package: sudo apt-get install python3-venv" \
        in done.stdout
    assert not (tmp_path / "venv").exists()


def test_the_license_is_an_spdx_string():
    """A TOML table is deprecated by setuptools ≥ 77 (a warning at every install)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())

    assert pyproject["project"]["license"] == "MIT"
    assert "setuptools>=77" in pyproject["build-system"]["requires"]
