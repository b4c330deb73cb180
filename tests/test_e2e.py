"""End to end without containers: fake hub -> scripts.download -> scripts.serve (real CPU vLLM,
scripted stand-in) -> the smoke suite (curl and the openai SDK), exactly as the smoke container
runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, VERSION_FACTS, assert_smoke_passed, cpu_env, smoke_verdict

pytestmark = pytest.mark.native
# the smoke scripts call python3 from PATH: this interpreter's (the venv's) first
PATH = f"{os.path.dirname(sys.executable)}:{os.environ.get('PATH', '')}"


def run_smoke(vllm_server, *args, **env) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PATH": PATH,
        "SMOKE_BASE_URL": vllm_server["base_url"],
        "SMOKE_API_KEY_FILE": str(vllm_server["key_file"]),
        **env,
    }
    return subprocess.run(["bash", "smoke/run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)  # fmt: skip


def test_smoke_suite_passes_with_key(vllm_server):
    t0 = time.monotonic()
    r = run_smoke(vllm_server)
    print(r.stdout[-6000:] + f"\n(smoke suite: {time.monotonic() - t0:.1f}s)")
    verdict = smoke_verdict(r.stdout)
    VERSION_FACTS["smoke"] = f"{verdict['passed']} passed, {verdict['failed']} failed"
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert_smoke_passed(r.stdout, url=None)


def test_smoke_suite_names_what_it_skips_for_dummy_weights(vllm_server):
    r = run_smoke(vllm_server, SMOKE_CHECK_ANSWERS="0")
    assert r.returncode == 0, r.stdout[-4000:]
    verdict = smoke_verdict(r.stdout)
    assert verdict["failed"] == "0"
    skipped = verdict["skipped"].split("; ")
    assert "curl: tool call: get_weather is called for Paris (SMOKE_CHECK_ANSWERS=0)" in skipped
    assert "sdk: completions: the answer says 120 (SMOKE_CHECK_ANSWERS=0)" in skipped
    assert "ok   sdk: tool call: a request with tools is answered" in r.stdout  # protocol checks


def test_smoke_suite_fails_against_a_wrong_model_name(vllm_server):
    r = run_smoke(vllm_server, SMOKE_MODEL="Qwen3-8B-x")
    assert r.returncode != 0
    verdict = smoke_verdict(r.stdout)
    assert int(verdict["failed"]) > 0 and verdict["model"] == "Qwen3-8B-x"
    assert "FAIL curl: GET /v1/models lists the served model" in r.stdout
    assert "FAIL sdk: tool call: a request with tools is answered" in r.stdout
    assert "ok   curl: GET /health answers 200" in r.stdout


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
