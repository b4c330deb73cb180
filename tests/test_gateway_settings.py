"""The gateway's settings are checked twice: by the registry (doctor, serve) and by gateway/run.sh
in the nginx container, which has no Python. Both must accept exactly the same values, or doctor
says OK and the gateway exits 2 (GATEWAY_MAX_BODY=1g did)."""

from __future__ import annotations

import subprocess

import pytest

from scripts.stack.settings import problems
from tests.conftest import ROOT

pytestmark = pytest.mark.native
SIZES = ["4m", "512k", "4M", "100", "0", "1g", "1G", "4k4", "4mm", "k", "1.5m", "-1", "4 m"]


def gateway_refuses(name: str, value: str) -> bool:
    """Does gateway/run.sh stop on this value (before it looks for the key file)?"""
    r = subprocess.run(
        ["sh", "gateway/run.sh"], cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", name: value, "GATEWAY_KEYS_FILE": "/nonexistent/keys"},
    )  # fmt: skip
    assert r.returncode == 2, r.stderr  # a bad value, or the missing key file after the checks
    return r.stderr.startswith(f"gateway: {name}=")


@pytest.mark.parametrize("value", SIZES)
def test_registry_and_gateway_agree_on_the_body_size(value):
    registry_refuses = bool(problems({"GATEWAY_MAX_BODY": value}, ("GATEWAY_MAX_BODY",)))
    assert registry_refuses == gateway_refuses("GATEWAY_MAX_BODY", value), value
