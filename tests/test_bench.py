"""bench/: what a run records so that runs can be compared (card, versions, flags, the checkpoint
served, fresh prompts), and a report that refuses to compare what cannot be compared."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, cpu_env

H100 = {"name": "NVIDIA H100 80GB HBM3", "driver": "580.159.04", "memory_mib": 81559, "count": 1}


def record(label: str, c1: float, c64: float, p99: float = 10.0, **over) -> dict:
    """A bench.run record with the fields the report reads."""
    run = {"label": label, "vllm": "0.26.0", "torch": "2.11.0+cu130", "card": H100,
           "meta": {"flags": f"vllm serve X --{label}"},
           "server": {"root": f"/m/{label}", "requests_before": 0},
           "results": {"1": {"output_throughput": c1, "median_tpot_ms": 5.0, "p99_tpot_ms": 5.5},
                       "64": {"output_throughput": c64, "median_tpot_ms": 9.0,
                              "p99_tpot_ms": p99}}}  # fmt: skip
    run.update(over)
    return run


def report(folder: Path, *runs: dict, args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    folder.mkdir(exist_ok=True)
    for i, run in enumerate(runs):
        (folder / f"{i}-{run['label']}.json").write_text(json.dumps(run))
    return subprocess.run(
        [sys.executable, "-m", "bench.report", str(folder), "--baseline", "plain", "--no-plots",
         *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.unit
def test_report_checks_issue_16s_goals_against_plain_bf16(tmp_path):
    r = report(tmp_path, record("plain", 140, 4800, p99=14.0),
               record("default", 140, 5600, p99=13.0),  # 1.167x, TPOT better
               record("fp8", 200, 6000),  # 1.25x at C=64: missed
               record("awq", 300, 5000))  # 2.14x single-stream  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "met   default >= 1.15x baseline tok/s at C=64: 1.167x" in r.stdout
    assert "met   default p99 TPOT at C=64 no worse" in r.stdout
    assert "MISS  fp8 >= 1.3x bf16 baseline tok/s at C=64: 1.250x" in r.stdout
    assert "met   awq >= 2.0x bf16 baseline single-stream tok/s: 2.143x" in r.stdout
    text = (tmp_path / "REPORT.md").read_text()
    assert "WARNING" not in text
    assert "| awq | NVIDIA H100 80GB HBM3 | 0.26.0 | 2.11.0+cu130 | /m/awq | 0 | `vllm serve X " \
           "--awq` |" in text  # fmt: skip


@pytest.mark.unit
@pytest.mark.parametrize(
    "other, named",
    [
        ({"card": {**H100, "name": "NVIDIA H200"}}, "awq on NVIDIA H200"),
        ({"vllm": "0.19.1"}, "awq on NVIDIA H100 80GB HBM3 with vLLM 0.19.1"),
        ({"torch": "2.10.0+cu128"}, "torch 2.10.0+cu128"),
    ],
)
def test_report_refuses_runs_from_different_cards_or_versions(tmp_path, other, named):
    runs = (record("plain", 140, 4800), record("default", 140, 5600),
            record("awq", 300, 5000, **other))  # fmt: skip
    r = report(tmp_path / "a", *runs)
    assert r.returncode == 2 and not (tmp_path / "a" / "REPORT.md").exists()
    (line,) = r.stderr.splitlines()
    assert line.startswith("bench.report: runs from different cards or versions: plain, default")
    assert named in line and "--allow-mixed" in line
    r = report(tmp_path / "b", *runs, args=("--allow-mixed",))
    assert r.returncode == 0 and "WARNING" in r.stderr
    text = (tmp_path / "b" / "REPORT.md").read_text()
    assert (
        text.startswith("> **WARNING: not comparable.** runs from different cards")
        and named in text
    )


@pytest.mark.unit
def test_report_refuses_two_runs_of_one_label(tmp_path):
    r = report(tmp_path, record("plain", 140, 4800), record("plain", 150, 4900))
    assert r.returncode == 2
    assert "two runs labelled 'plain' (0-plain.json, 1-plain.json)" in r.stderr


@pytest.mark.native
def test_a_run_records_what_makes_it_comparable(tmp_path, vllm_server, served_models):
    """bench.run against the real CPU vLLM server: fresh seeds, the versions, no card here (no
    nvidia-smi), the checkpoint the server reports and the requests it had served before."""
    out = [tmp_path / "one.json", tmp_path / "two.json"]
    env = cpu_env(MODELS_DIR=str(served_models), API_KEY_FILE=str(vllm_server["key_file"]))
    for path in out:
        r = subprocess.run(
            [sys.executable, "-m", "bench.run", "--base-url", vllm_server["base_url"],
             "--label", path.stem, "--concurrency", "1", "--input-len", "16", "--output-len", "4",
             "--scale", "0.3", "--meta", "flags=--a-flag", "--out", str(path)],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    one, two = (json.loads(p.read_text()) for p in out)
    import torch
    import vllm

    assert (one["vllm"], one["torch"]) == (vllm.__version__, torch.__version__)
    assert one["card"] is None and one["meta"]["flags"] == "--a-flag"
    assert one["server"]["root"] == str(served_models / "Qwen" / "Qwen3-8B")
    assert one["results"]["1"]["seed"] != two["results"]["1"]["seed"]  # fresh prompts
    # the second run's server had finished the first run's requests (4, and its warm-up)
    assert two["server"]["requests_before"] >= one["server"]["requests_before"] + 4
