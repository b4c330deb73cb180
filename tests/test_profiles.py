"""Profiles that serve another checkpoint (fp8: Qwen's FP8 one, awq: its 4-bit AWQ one): which repo
each downloads and serves, what its weights take in GPU memory, and the serve start that stops
before vLLM when the model folder holds another format than SERVE_PROFILE serves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import standins
from scripts.checks import memory
from scripts.stack import manifest, model, profiles, settings, vllm_args
from scripts.stack.settings import load
from tests.conftest import ROOT

GIB = 1 << 30


@pytest.mark.unit
@pytest.mark.parametrize(
    "model_id, profile, served",
    [
        ("Qwen/Qwen3-8B", "default", "Qwen/Qwen3-8B"),
        ("Qwen/Qwen3-8B", "fp8", "Qwen/Qwen3-8B-FP8"),
        ("Qwen/Qwen3-8B", "awq", "Qwen/Qwen3-8B-AWQ"),
        ("Qwen/Qwen3-14B", "awq", "Qwen/Qwen3-14B-AWQ"),  # any Qwen repo: Qwen's naming
        ("Qwen/Qwen3-8B-AWQ", "awq", "Qwen/Qwen3-8B-AWQ"),  # already the quantized repo
        ("Qwen/Qwen3-8B-FP8", "awq", "Qwen/Qwen3-8B-FP8"),  # as given: serve then refuses it
        ("Qwen/Qwen3-8B-AWQ", "default", "Qwen/Qwen3-8B-AWQ"),
        ("myorg/Qwen3-8B-ft", "awq", "myorg/Qwen3-8B-ft"),  # another owner's: as given
    ],
)
def test_each_profile_downloads_and_serves_its_checkpoint(model_id, profile, served):
    s = load({"MODEL_ID": model_id, "SERVE_PROFILE": profile})
    assert s.model_id == model_id and s.checkpoint_id == served
    assert s.model_path == Path("/models") / served
    args = vllm_args.build_args(s)
    assert args[args.index("--model") + 1] == f"/models/{served}"
    # vLLM reads the checkpoint's own quantization_config: a --quantization that differs from
    # it makes vLLM refuse to start, so no profile passes one
    assert "--quantization" not in args


@pytest.mark.unit
def test_weights_per_profile_in_gpu_memory():
    """bf16 as vLLM logged it on the H100 (15.27 GiB); FP8 1 byte a weight + a float32 scale
    per 128x128 block; AWQ 4 bits + an fp16 scale and 4-bit zero point per 128 inputs; the
    embedding and LM head unquantized. A public vLLM 0.24 run logged 5.71 GiB for
    Qwen/Qwen3-8B-AWQ."""
    shape = model.QWEN3_8B
    linear, other = shape.linear_params(), shape.other_params()
    assert linear == 6_945_767_424  # "Number of Parameters (Non-Embedding): 6.95B"
    blocks = 36 * (32 * 32 + 2 * 8 * 32 + 32 * 32 + 2 * 96 * 32 + 32 * 96)
    assert shape.weight_bytes("fp8") == linear + 4 * blocks + 2 * other
    awq = linear // 2 + linear // 128 * 2 + linear // 128 // 2 + 2 * other
    assert shape.weight_bytes("awq") == awq
    got = {f: round(shape.weight_bytes(f) / GIB, 2) for f in ("bf16", "fp8", "awq")}
    assert got == {"bf16": 15.26, "fp8": 8.79, "awq": 5.68}
    # the group size comes from the checkpoint's config: group 64 doubles scales and zeros
    g64 = {**profiles.PROFILES["awq"].quantization_config, "group_size": 64}
    assert shape.weight_bytes("awq", quant=g64) - awq == linear // 128 * 5 // 2
    # the per-GPU estimate follows the profile (and the folder's config when it is there)
    need = {p: memory.model_memory_need(load({"SERVE_PROFILE": p}), shape) for p in
            ("default", "fp8", "awq")}  # fmt: skip
    assert [(n.weight_format, n.fp8_kv) for n in need.values()] == [
        ("bf16", True), ("fp8", True), ("awq", True)
    ]  # fmt: skip
    assert need["awq"].weights == shape.weight_bytes("awq")
    folder = memory.model_memory_need(load({"SERVE_PROFILE": "awq"}), shape, quant=g64)
    assert folder.weights == shape.weight_bytes("awq", quant=g64)
    # SERVE_PROFILE's documented sizes are these numbers
    doc = settings.BY_NAME["SERVE_PROFILE"].doc
    for fmt in ("bf16", "fp8", "awq"):
        assert f"{shape.weight_bytes(fmt) / 1e9:.1f} GB" in doc, (fmt, doc)


@pytest.fixture(scope="module")
def shapes() -> dict[str, Path]:
    """The three Qwen3-8B-shape stand-ins: bf16, Qwen's FP8 and AWQ configs (no weights)."""
    return {fmt: standins.ensure(kind) for fmt, kind in standins.SHAPE_OF_FORMAT.items()}


def models_dir(tmp_path: Path, layout: dict[str, Path]) -> Path:
    """A models volume holding each stand-in under a repo's name."""
    for repo, src in layout.items():
        (tmp_path / repo).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / repo).symlink_to(src)
    return tmp_path


def serve(models: Path, *args: str, program: str = "scripts.serve", **env: str):
    base = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "PATH")}
    base.update({"PYTHONPATH": str(ROOT), "SERVE_DEVICE": "cuda", "LOAD_FORMAT": "dummy",
                 "MODELS_DIR": str(models), **env})  # fmt: skip
    return subprocess.run([sys.executable, "-m", program, *args], env=base, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.unit
@pytest.mark.parametrize(
    "folder, model_id, profile, fix",
    [
        ("bf16", "myorg/Qwen3-8B-ft", "awq",
         "fix: SERVE_PROFILE=default, or MODEL_ID=<an AWQ (4-bit) checkpoint of this model>"),
        ("awq", "Qwen/Qwen3-8B-AWQ", "default",
         "fix: SERVE_PROFILE=awq, or MODEL_ID=Qwen/Qwen3-8B for unquantized (bf16) weights"),
        ("fp8", "Qwen/Qwen3-8B-FP8", "awq",
         "fix: SERVE_PROFILE=fp8, or MODEL_ID=Qwen/Qwen3-8B (then Qwen/Qwen3-8B-AWQ is fetched)"),
        ("bf16", "Qwen/Qwen3-8B", "fp8",  # a mirror that served bf16 files as the FP8 repo
         "fix: SERVE_PROFILE=default in .env, or download Qwen/Qwen3-8B-FP8 again"),
    ],
)  # fmt: skip
def test_a_folder_of_another_format_stops_before_vllm(tmp_path, shapes, folder, model_id,
                                                      profile, fix):  # fmt: skip
    repo = profiles.checkpoint_id(model_id, profile)
    models = models_dir(tmp_path, {repo: shapes[folder]})
    r = serve(models, "--print", MODEL_ID=model_id, SERVE_PROFILE=profile)
    print(r.stderr)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith(f"serve: SERVE_PROFILE={profile} serves ")
    assert f"(MODEL_ID={model_id}) holds" in line and fix in line and "in .env" in line


@pytest.mark.unit
def test_each_profile_starts_on_its_own_checkpoint(tmp_path, shapes):
    """The default MODEL_ID with every profile: each finds its own stand-in under its own repo
    name; fp8 and awq pass no --quantization (vLLM reads the checkpoint's)."""
    layout = {profiles.checkpoint_id("Qwen/Qwen3-8B", p): shapes[spec.weights]
              for p, spec in profiles.PROFILES.items()}  # fmt: skip
    models = models_dir(tmp_path, layout)
    for profile in profiles.PROFILES:
        r = serve(models, "--print", SERVE_PROFILE=profile)
        assert r.returncode == 0, (profile, r.stderr)
        served = models / profiles.checkpoint_id("Qwen/Qwen3-8B", profile)
        assert f" {served} " in r.stdout and "--quantization" not in r.stdout, r.stdout


@pytest.mark.unit
def test_the_check_runs_on_a_completed_download_and_in_offline_inference(tmp_path, shapes):
    """Not only with dummy weights: a real, complete download of the AWQ checkpoint served with
    the default profile stops too, and so does offline inference (before importing vLLM)."""
    target = tmp_path / "Qwen" / "Qwen3-8B-AWQ"
    shutil.copytree(shapes["awq"], target)
    files = {p.name: {"size": p.stat().st_size, "sha256": ""} for p in target.iterdir()}
    manifest.write(target, files, model_id="Qwen/Qwen3-8B-AWQ")
    for program in ("scripts.serve", "scripts.offline_infer"):
        r = serve(tmp_path, program=program, MODEL_ID="Qwen/Qwen3-8B-AWQ", LOAD_FORMAT="auto",
                  SERVE_PROFILE="default", PREFLIGHT="0")  # fmt: skip
        name = program.split(".")[1]
        assert r.returncode == 2, r.stdout + r.stderr
        assert r.stderr.startswith(f"{name}: SERVE_PROFILE=default serves unquantized (bf16)")
        assert "holds an AWQ (4-bit) checkpoint; fix: SERVE_PROFILE=awq" in r.stderr
    # the same download with SERVE_PROFILE=awq passes the check (and goes on to the preflight)
    assert vllm_args.checkpoint_problem(
        load({"MODELS_DIR": str(tmp_path), "MODEL_ID": "Qwen/Qwen3-8B-AWQ",
              "SERVE_PROFILE": "awq"})
    ) is None  # fmt: skip
    assert json.loads((target / "config.json").read_text())["quantization_config"] == dict(
        profiles.PROFILES["awq"].quantization_config
    )
