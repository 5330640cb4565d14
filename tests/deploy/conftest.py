"""Deploy fixtures: the repository's image and template files, and the linters' paths."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    """A linter installed with the test extras (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


@pytest.fixture(scope="session")
def template() -> dict:
    """template.yaml as CloudFormation reads it (short-form tags such as !Ref understood)."""
    pytest.importorskip("cfnlint")
    from cfnlint.decode import decode

    decoded, problems = decode(str(ROOT / "template.yaml"))
    assert not problems, problems
    return decoded


@pytest.fixture(scope="session")
def function(template) -> dict:
    return template["Resources"]["ApiFunction"]
