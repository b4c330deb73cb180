"""Operations checks on a GPU host, without Docker: the serve preflight, the `/metrics` that the
Grafana dashboard reads, and a graceful stop (SIGTERM while answers stream: vLLM's
--shutdown-timeout lets them finish). Stdlib only.

    python -m bench.ops_check --model-dir DIR/Qwen/Qwen3-8B --out OUT [--extra "--enforce-eager"]

Writes OUT/ops.json (figures), OUT/metrics.txt (the scraped /metrics) and OUT/serve.log.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench.gpu_session import PORT, wait_ready

BASE = f"http://127.0.0.1:{PORT}"


def call(path: str, key: str, body: dict | None = None, timeout: float = 60):
    req = urllib.request.Request(
        BASE + path, data=None if body is None else json.dumps(body).encode()
    )
    req.add_header("Authorization", f"Bearer {key}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    return urllib.request.urlopen(req, timeout=timeout)


def stream(key: str, max_tokens: int, out: list) -> None:
    body = {
        "model": "Qwen3-8B",
        "prompt": "Tell a long story.",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": True,
    }
    t0, events, last = time.monotonic(), 0, ""
    try:
        with call("/v1/completions", key, body) as r:
            for raw in r:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    events += 1
                    last = line
        out.append(
            {
                "done": last == "data: [DONE]",
                "events": events,
                "secs": round(time.monotonic() - t0, 2),
            }
        )
    except (OSError, urllib.error.URLError) as e:
        out.append(
            {
                "done": False,
                "events": events,
                "error": repr(e),
                "secs": round(time.monotonic() - t0, 2),
            }
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--extra", default="", help="SERVE_EXTRA_ARGS")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--shutdown-timeout", default="30")
    # short enough to finish inside --shutdown-timeout even with --enforce-eager (~30 tok/s each)
    ap.add_argument("--stream-tokens", type=int, default=400)
    opts = ap.parse_args(argv)
    opts.out.mkdir(parents=True, exist_ok=True)
    key_file = opts.out / "api_key"
    key = secrets.token_urlsafe(32)
    key_file.write_text(key + "\n")
    env = {
        **os.environ,
        "MODELS_DIR": str(opts.model_dir.parent.parent),
        "MODEL_ID": f"{opts.model_dir.parent.name}/{opts.model_dir.name}",
        "LOAD_FORMAT": "dummy",
        "SERVE_PROFILE": opts.profile,
        "SERVE_HOST": "127.0.0.1",
        "SERVE_PORT": str(PORT),
        "API_KEY_FILE": str(key_file),
        "SHUTDOWN_TIMEOUT": opts.shutdown_timeout,
        "SERVE_EXTRA_ARGS": opts.extra,
        "PREFLIGHT": "1",
    }
    log = opts.out / "serve.log"
    res: dict = {}
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.serve"],
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        try:
            res["ready_s"] = round(wait_ready(proc, timeout=540), 1)
        except RuntimeError:  # exited before it was ready (the preflight, say)
            print(log.read_text()[-4000:])
            res["exit_before_ready"] = proc.returncode
            return 1
        print(f"ready in {res['ready_s']} s", flush=True)

        # traffic, so every histogram and counter the dashboard reads has samples
        warm: list = []
        threads = [threading.Thread(target=stream, args=(key, 200, warm)) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with call(
            "/v1/chat/completions",
            key,
            {
                "model": "Qwen3-8B",
                "max_tokens": 32,
                "messages": [{"role": "user", "content": "hi"}],
            },
        ) as r:
            res["chat_status"] = r.status
        res["warm_streams_done"] = sum(x["done"] for x in warm)
        with urllib.request.urlopen(BASE + "/metrics", timeout=30) as r:  # no key: internal only
            text = r.read().decode()
        (opts.out / "metrics.txt").write_text(text)
        res["metrics_series"] = sum(1 for ln in text.splitlines() if ln and not ln.startswith("#"))

        # graceful stop: SIGTERM while 4 long answers stream
        drain: list = []
        threads = [
            threading.Thread(target=stream, args=(key, opts.stream_tokens, drain)) for _ in range(4)
        ]
        for t in threads:
            t.start()
        time.sleep(3)
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(120)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:  # seen on vLLM 0.26.0 after a drain that timed out
            code = "still running 90 s after its streams ended"
        res["drain"] = {
            "streams": drain,
            "server_exit": code,
            "exit_after_sigterm_s": round(time.monotonic() - t_term, 1),
        }
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        (opts.out / "ops.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
