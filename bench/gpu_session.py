"""One GPU measurement session: for each profile, start the server through `python -m
scripts.serve` (the bundle's own argument builder) on the stand-in of the checkpoint the profile
serves, with `--load-format dummy` (qwen3-8b-shape for the bf16 profiles, its FP8 / AWQ variants
for fp8 / awq: vLLM builds the real quantized layers and kernels), time it to ready, run the
benchmark sweep, optionally the smoke suite and a warm restart, then stop it. `baseline` is the
literal `vllm serve MODEL` with vLLM's defaults on the bf16 stand-in. Each run records the
command it started (bench.run --meta flags=...).

    python -m bench.gpu_session --out OUT --profiles plain,default,fp8,awq
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

PORT = 8000


def cache_env(root: Path) -> dict[str, str]:
    """Where vLLM, torch.compile, Triton and FlashInfer keep their caches (as in the image)."""
    return {
        "XDG_CACHE_HOME": str(root),
        "VLLM_CACHE_ROOT": str(root / "vllm"),
        "TRITON_CACHE_DIR": str(root / "triton"),
        "FLASHINFER_WORKSPACE_BASE": str(root),
    }


def wait_ready(proc: subprocess.Popen, timeout: float = 560) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError("server not ready in time")


def model_dir_for(profile: str, bf16_dir: Path | None) -> Path:
    """The stand-in of the checkpoint a profile serves (`baseline`: the bf16 one)."""
    from bench.standins import SHAPE_OF_FORMAT, ensure
    from scripts.stack.profiles import BF16, PROFILES

    weights = BF16 if profile == "baseline" else PROFILES[profile].weights
    if weights == BF16 and bf16_dir is not None:
        return bf16_dir
    return ensure(SHAPE_OF_FORMAT[weights])


def server(
    profile: str, model_dir: Path, cache: Path, extra: str, key_file: str
) -> tuple[list[str], dict[str, str], list[str]]:
    """(command, environment, the vLLM command it runs) for a profile."""
    env = {**os.environ, **cache_env(cache), "API_KEY_FILE": key_file}
    if profile == "baseline":
        cmd = ["vllm", "serve", str(model_dir), "--served-model-name", "Qwen3-8B",
               "--load-format", "dummy", "--port", str(PORT)]  # fmt: skip
        return cmd, env, cmd
    env.update(
        MODELS_DIR=str(model_dir.parent.parent),
        MODEL_ID=f"{model_dir.parent.name}/{model_dir.name}",
        LOAD_FORMAT="dummy", SERVE_PROFILE=profile, SERVE_DEVICE="cuda", SERVE_PORT=str(PORT),
        SERVE_HOST="127.0.0.1", SERVE_EXTRA_ARGS=extra,
    )  # fmt: skip
    cmd = [sys.executable, "-m", "scripts.serve"]
    shown = subprocess.run([*cmd, "--print"], env=env, capture_output=True, text=True)
    if shown.returncode:  # e.g. a folder of another format than the profile: say why, stop
        raise RuntimeError(shown.stderr.strip() or f"scripts.serve --print: {shown.returncode}")
    return cmd, env, shlex.split(shown.stdout)


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, env=env, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--model-dir", type=Path, default=None, help="bf16 folder (default: the stand-in)"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--profiles", required=True, help="comma list; NAME or NAME:label")
    ap.add_argument("--concurrency", default="1,8,32,64,128")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/qvs-cache"))
    ap.add_argument("--cold", action="store_true", help="empty the caches before each profile")
    ap.add_argument("--warm-restart", action="store_true", help="restart once to time warm ready")
    ap.add_argument("--smoke", action="store_true", help="run the smoke suite once")
    ap.add_argument("--no-bench", action="store_true", help="time to ready only")
    ap.add_argument("--extra", default="", help="SERVE_EXTRA_ARGS for every profile")
    ap.add_argument("--api-key-file", default="", help="serve, bench and smoke with this key")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for item in a.profiles.split(","):
        profile, _, label = item.partition(":")
        label = label or profile
        cache = a.cache / label
        if a.cold and cache.exists():
            shutil.rmtree(cache)
        log = a.out / f"{label}.log"
        model_dir = model_dir_for(profile, a.model_dir)
        try:
            cmd, env, vllm_cmd = server(profile, model_dir, cache, a.extra, a.api_key_file)
        except RuntimeError as e:
            print(f"{label}: not started: {e}", flush=True)
            continue
        proc = start(cmd, env, log)
        try:
            ready = wait_ready(proc)
            state = "cold" if a.cold else "as cached"
            print(f"{label}: ready in {ready:.1f}s ({state})", flush=True)
            timings = {"ready_s": ready}
            if a.smoke:
                env = {**os.environ, "SMOKE_BASE_URL": f"http://127.0.0.1:{PORT}",
                       "SMOKE_CHECK_ANSWERS": "0", "SMOKE_MAX_TOKENS": "64",
                       "SMOKE_API_KEY_FILE": a.api_key_file}  # fmt: skip
                rc = subprocess.call(["bash", "smoke/run"], env=env)
                print(f"{label}: smoke suite exit {rc}", flush=True)
                timings["smoke_rc"] = rc
            bench = None if a.no_bench else subprocess.run([
                sys.executable, "-m", "bench.run", "--base-url", f"http://127.0.0.1:{PORT}",
                "--model", "Qwen3-8B", "--tokenizer", str(model_dir), "--label", label,
                "--concurrency", a.concurrency, "--scale", str(a.scale),
                "--ready-s", f"{ready:.1f}",
                "--meta", f"profile={profile}", "--meta", f"extra={a.extra}",
                "--meta", f"flags={shlex.join(vllm_cmd)}",
                "--out", str(a.out / f"{label}.json"),
            ], env={**os.environ, "API_KEY_FILE": a.api_key_file}, capture_output=True,
                text=True)  # fmt: skip
            if bench is not None:
                (a.out / f"{label}.bench.log").write_text(bench.stdout + bench.stderr)
                print(
                    "".join(ln for ln in bench.stdout.splitlines(True) if ln.startswith("bench ")),
                    end="",
                    flush=True,
                )
                if bench.returncode:
                    print(f"{label}: bench exit {bench.returncode}", flush=True)
            if a.warm_restart:
                stop(proc)
                proc = start(cmd, env, log)
                timings["warm_ready_s"] = wait_ready(proc)
                print(f"{label}: warm restart ready in {timings['warm_ready_s']:.1f}s", flush=True)
            rec_path = a.out / f"{label}.json"
            rec = json.loads(rec_path.read_text()) if rec_path.exists() else {"label": label}
            rec.update(timings, cold=a.cold)
            rec_path.write_text(json.dumps(rec, indent=1) + "\n")
        except Exception as e:  # keep going with the next profile; the log says why
            print(f"{label}: FAILED {e}; tail of {log}:", flush=True)
            print("".join(log.read_text(errors="replace").splitlines(True)[-30:]), flush=True)
        finally:
            stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
