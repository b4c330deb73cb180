"""scripts.init_secrets: writes the secrets that are missing, keeps the ones that exist."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.unit


def run(cwd: Path) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("API_KEY_FILE", "GRAFANA_ADMIN_PASSWORD_FILE", "TLS_DIR")
    }
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "scripts.init_secrets"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_first_run_writes_everything_readable_by_the_containers(tmp_path):
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    s = tmp_path / "secrets"
    key = (s / "api_key").read_text().strip()
    assert len(key) >= 43 and key not in r.stdout
    assert len((s / "grafana_admin_password").read_text().strip()) >= 24
    assert (s / "tls").is_dir() and not any((s / "tls").iterdir())
    assert s.stat().st_mode & 0o777 == 0o700
    for f in ("api_key", "grafana_admin_password"):
        assert (s / f).stat().st_mode & 0o777 == 0o644  # uid 10001 / 472 read it via bind mount


def test_second_run_keeps_what_exists(tmp_path):
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api_key").write_text("my-own-key-0123456789\nsecond-key-0123456789\n")
    assert run(tmp_path).returncode == 0
    first = (tmp_path / "secrets" / "grafana_admin_password").read_text()
    r = run(tmp_path)
    assert r.returncode == 0 and r.stdout.count("already exists, kept") == 2, r.stdout
    assert (tmp_path / "secrets" / "api_key").read_text().startswith("my-own-key-0123456789\n")
    assert (tmp_path / "secrets" / "grafana_admin_password").read_text() == first
