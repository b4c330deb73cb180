"""API key step: the file Compose reads the `api_key` secret from holds a key."""

from __future__ import annotations

from pathlib import Path

from scripts.checks.row import FAIL, OK, Row
from scripts.doctor.facts import Facts
from scripts.stack.compose import ROOT
from scripts.stack.settings import read_keys


def api_key(f: Facts) -> Row:
    raw = f.compose.secret_file("api_key", "API_KEY_FILE")
    path = Path(raw) if Path(raw).is_absolute() else ROOT / raw
    try:
        keys = read_keys(f.host.read_text(str(path)))
    except OSError:
        keys = []
    if keys:
        return Row("API key", OK, f"{raw} holds {len(keys)} key(s)")
    return Row(
        "API key", FAIL, f"{raw} is missing or has no key (compose reads the secret from it)",
        "python3 -m scripts.init_secrets",
    )  # fmt: skip
