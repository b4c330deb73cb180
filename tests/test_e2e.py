"""End to end without containers: fake hub -> scripts.download -> scripts.serve (real CPU vLLM,
scripted stand-in) -> the smoke suite, curl and Python, exactly as the smoke container runs it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cpu_env

pytestmark = pytest.mark.e2e
# the smoke scripts call python3 from PATH: this interpreter's (the venv's) first
PATH = f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"


def test_smoke_suite_passes_with_key(vllm_server):
    env = {
        **os.environ,
        "PATH": PATH,
        "SMOKE_BASE_URL": vllm_server["base_url"],
        "SMOKE_API_KEY_FILE": str(vllm_server["key_file"]),
    }
    r = subprocess.run(
        ["bash", "smoke/run", "-v"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    print(r.stdout[-4000:])
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "smoke.sh: 13 checks passed" in r.stdout
    assert "8 passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1]


def test_smoke_suite_fails_against_a_wrong_model_name(vllm_server):
    env = {
        **os.environ,
        "PATH": PATH,
        "SMOKE_BASE_URL": vllm_server["base_url"],
        "SMOKE_MODEL": "Qwen3-8B-x",
        "SMOKE_API_KEY_FILE": str(vllm_server["key_file"]),
    }
    r = subprocess.run(
        ["bash", "smoke/smoke.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode != 0 and "FAIL GET /v1/models lists Qwen3-8B-x" in r.stderr


def test_api_key_never_on_the_command_line(vllm_server):
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert vllm_server["key"] not in out


def test_offline_infer_prints_both_modes(served_models):
    env = cpu_env(MODELS_DIR=str(served_models))
    r = subprocess.run(
        [sys.executable, "-m", "scripts.offline_infer"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    think = [ln for ln in r.stdout.splitlines() if ln.startswith("[enable_thinking=True]")]
    plain = [ln for ln in r.stdout.splitlines() if ln.startswith("[enable_thinking=False]")]
    print("\n" + "\n".join(think + plain))
    assert think[0].endswith("<|im_start|>assistant\\n'")
    assert "</think>\\n\\n5! = 120'" in think[1]
    assert plain[0].endswith("<think>\\n\\n</think>\\n\\n'") and plain[1].endswith("'5! = 120'")
