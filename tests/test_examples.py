"""The scripts in examples/ run as documented against FakeIllumass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from illumass.testing import FakeIllumass

EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.mark.parametrize("script", ["async_service.py", "sync_script.py", "bulk_provision.py"])
def test_example_script(illumass_server: FakeIllumass, tmp_path: Path, script: str) -> None:
    env = {
        **os.environ,
        "ILLUMASS_BASE_URL": illumass_server.url,
        "ILLUMASS_EMAIL": illumass_server.email,
        "ILLUMASS_PASSWORD": illumass_server.password,
    }
    env.pop("ILLUMASS_API_KEY", None)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout


def test_example_tests_pass() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLES / "test_my_code.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
