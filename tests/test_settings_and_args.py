"""Settings are validated in one place; the vLLM argument list is built in one place and is
accepted by the installed vLLM's own parser."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.serve import PROFILE_FLAGS, build_args, command
from scripts.settings import Settings, SettingsError, load
from tests.conftest import ROOT, cpu_env


@pytest.mark.unit
def test_defaults_serve_the_tutorial_model():
    s = load({})
    assert (s.model_id, s.revision, s.model_source) == ("Qwen/Qwen3-8B", "master", "modelscope")
    # an empty MODEL_REVISION is the hub's default branch, which the two hubs name differently
    assert load({"MODEL_SOURCE": "huggingface"}).revision == "main"
    assert load({"MODEL_SOURCE": "huggingface", "MODEL_REVISION": "v1"}).revision == "v1"
    assert (s.served_model_name, s.max_model_len, s.reasoning_parser) == ("Qwen3-8B", 8192, "qwen3")
    args = build_args(s)
    pairs = dict(zip(args[::2], args[1::2], strict=False))
    assert pairs["--model"] == "/models/Qwen/Qwen3-8B"
    assert "--reasoning-parser" in args and args[args.index("--reasoning-parser") + 1] == "qwen3"
    assert "--enable-reasoning" not in args  # gone from vLLM; the parser alone enables it
    assert "--api-key" not in args  # the key travels in the environment, never argv
    for flag in PROFILE_FLAGS["default"]:
        assert flag in args


@pytest.mark.unit
@pytest.mark.parametrize(
    "env, needle",
    [
        ({"MAX_MODEL_LEN": "8k"}, "MAX_MODEL_LEN='8k' must be a whole number"),
        ({"MAX_MODEL_LEN": "100"}, "MAX_MODEL_LEN='100' must be between 256 and 40960"),
        ({"GPU_MEMORY_UTILIZATION": "95"}, "GPU_MEMORY_UTILIZATION='95' must be between"),
        ({"TENSOR_PARALLEL_SIZE": "3"}, "TENSOR_PARALLEL_SIZE='3' must be 1, 2, 4 or 8"),
        ({"MODEL_SOURCE": "hf"}, "MODEL_SOURCE='hf' must be one of modelscope, huggingface"),
        ({"MODEL_ID": "../etc"}, "MODEL_ID='../etc' must look like OWNER/NAME"),
        ({"SERVE_PROFILE": "fast"}, "SERVE_PROFILE='fast' must be one of plain, default"),
        ({"MODELS_DIR": "models"}, "MODELS_DIR='models' must be an absolute path"),
        ({"SERVE_EXTRA_ARGS": "--x 'open"}, 'SERVE_EXTRA_ARGS="--x \'open" is not valid'),
    ],
)
def test_bad_values_name_the_setting_and_the_fix(env, needle):
    with pytest.raises(SettingsError) as e:
        load(env)
    assert needle in str(e.value) and "fix it in .env" in str(e.value)


@pytest.mark.unit
def test_all_problems_are_reported_at_once():
    with pytest.raises(SettingsError) as e:
        load({"MAX_MODEL_LEN": "x", "SERVE_PORT": "0", "VLLM_API_KEY": "secret"})
    assert "MAX_MODEL_LEN" in str(e.value) and "SERVE_PORT" in str(e.value)


@pytest.mark.unit
def test_api_key_file(tmp_path):
    key = tmp_path / "k"
    key.write_text("abc\n")
    assert load({"API_KEY_FILE": str(key)}).resolved_api_key() == "abc"
    key.write_text("# clients\n\n  first-key  \nsecond-key\n")  # several keys: vLLM's is the first
    assert load({"API_KEY_FILE": str(key)}).resolved_api_key() == "first-key"
    key.write_text("# only a comment\n")
    with pytest.raises(SettingsError, match="is empty"):
        load({"API_KEY_FILE": str(key)}).resolved_api_key()
    key.write_text("")
    with pytest.raises(SettingsError, match="is empty"):
        load({"API_KEY_FILE": str(key)}).resolved_api_key()
    with pytest.raises(SettingsError, match="cannot read it"):
        load({"API_KEY_FILE": str(tmp_path / "none")}).resolved_api_key()


@pytest.mark.unit
def test_cpu_device_and_parallelism():
    cpu = build_args(Settings(device="cpu"))
    assert cpu[cpu.index("--dtype") + 1] == "float32"
    assert not any(f in cpu for f in ("--kv-cache-dtype", "--quantization"))
    tp = build_args(Settings(tensor_parallel_size=2, profile="fp8"))
    assert tp[tp.index("--tensor-parallel-size") + 1] == "2"
    assert tp[tp.index("--quantization") + 1] == "fp8"
    with pytest.raises(SettingsError, match="fp8 needs a GPU"):
        load({"SERVE_PROFILE": "fp8", "SERVE_DEVICE": "cpu"})


@pytest.mark.unit
def test_command_uses_module_entry_without_a_vllm_distribution():
    cmd = command(Settings(device="cpu"))
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"] or cmd[:2] == ["vllm", "serve"]


@pytest.mark.e2e
def test_installed_vllm_parser_accepts_every_profile():
    r = subprocess.run(
        [sys.executable, "-m", "tests.check_vllm_args"],
        cwd=ROOT,
        env=cpu_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["refused"] == {} and report["accepted"] == 9
    print(f"\nvLLM {report['vllm']} accepted {report['accepted']} argument lists")


def track_pins() -> list[str]:
    """The vLLM versions the GPU tracks pin (requirements/track-*.txt)."""
    pins = []
    for req in sorted((ROOT / "requirements").glob("track-*.txt")):
        pins += [ln.split("==")[1].strip() for ln in req.read_text().splitlines()
                 if ln.startswith("vllm==")]  # fmt: skip
    return pins


@pytest.mark.e2e
@pytest.mark.parametrize("version", track_pins())
def test_gpu_track_vllm_parser_accepts_every_profile(version, tmp_path_factory):
    """The GPU wheel's own parser, imported on this CPU-only machine (told it is on the CPU
    platform: parsing only). Its Python code runs on the test venv's torch."""
    import os

    cache = Path(os.environ.get("QVS_CACHE", tmp_path_factory.mktemp("cache"))) / "parsers"
    site = cache / f"vllm-{version}"
    if not (site / ".complete").exists():
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        subprocess.run([*pip, f"vllm=={version}", "gguf"], check=True, timeout=900)
        (site / ".complete").touch()
    env = cpu_env(PYTHONPATH=f"{site}:{ROOT}")
    r = subprocess.run([sys.executable, "-m", "tests.check_vllm_args"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["vllm"] == version and report["refused"] == {} and report["accepted"] == 9
    print(f"\nvLLM {version} (GPU track) accepted {report['accepted']} argument lists")
