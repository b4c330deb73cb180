"""Benchmark a running endpoint with `vllm bench serve` over a concurrency sweep.

    python -m bench.run --base-url http://127.0.0.1:8000 --label mine --out bench/results/mine.json

Random data, 1000 tokens in / 500 out, EOS ignored, for each concurrency in --concurrency. Every
run draws fresh prompts (a new seed per concurrency, recorded): a rerun on a live server would
otherwise hit the prefix cache with the same prompts and measure the cache, not the server. The
output JSON keeps, per concurrency: output tok/s, TTFT, TPOT and ITL (mean, p50, p99), and what
makes runs comparable: the card (nvidia-smi's name, driver and memory, where there is one), the
vLLM and torch versions, the server's flags (--meta flags=..., bench.gpu_session passes the
command it started), the checkpoint the server reports (/v1/models) and how many requests it had
finished before this run (/metrics). Run it inside the bundle's image (it has vLLM) against the
stack, or anywhere vLLM is installed. `bench.report` turns one or more of these files into plots
and a Markdown report, and refuses to compare runs from different cards or versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import time
from pathlib import Path

KEEP = (
    "completed", "failed", "duration", "output_throughput", "total_token_throughput",
    "request_throughput", "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms",
    "median_tpot_ms", "p99_tpot_ms", "mean_itl_ms", "median_itl_ms", "p99_itl_ms",
)  # fmt: skip


def prompts_for(concurrency: int, scale: float) -> int:
    """Enough requests for a steady state at this concurrency, within minutes on one GPU."""
    return max(4, int(round(3 * concurrency * scale)))


def bench_once(
    base_url: str,
    model: str,
    tokenizer: str,
    concurrency: int,
    num_prompts: int,
    input_len: int,
    output_len: int,
    seed: int,
) -> dict:
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args([
        "--backend", "openai", "--base-url", base_url, "--endpoint", "/v1/completions",
        "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random",
        "--random-input-len", str(input_len), "--random-output-len", str(output_len),
        "--ignore-eos", "--num-prompts", str(num_prompts), "--max-concurrency", str(concurrency),
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--disable-tqdm", "--num-warmups", str(min(concurrency, 8)), "--seed", str(seed),
    ])  # fmt: skip
    result = main(args)
    return {k: result[k] for k in KEEP if k in result}


def version(module: str) -> str:
    try:
        return __import__(module).__version__
    except ImportError:
        return "unknown"


def card() -> dict | None:
    """The GPUs as nvidia-smi names them (None without nvidia-smi: a CPU run)."""
    from scripts.checks.gpus import query_gpus

    gpus, _ = query_gpus()
    if not gpus:
        return None
    return {"name": gpus[0].name, "driver": gpus[0].driver, "memory_mib": gpus[0].total_mib,
            "count": len(gpus)}  # fmt: skip


def _get(url: str, key: str | None) -> bytes | None:
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()
    except OSError:
        return None


def server_facts(base_url: str, key: str | None) -> dict:
    """What the server says about itself: the checkpoint it serves and its length (/v1/models),
    and the requests it had finished before this run (/metrics: vllm:request_success_total)."""
    out: dict = {}
    models = _get(base_url + "/v1/models", key)
    if models:
        data = json.loads(models).get("data") or [{}]
        out.update(root=data[0].get("root"), max_model_len=data[0].get("max_model_len"))
    metrics = _get(base_url + "/metrics", key)
    if metrics:
        lines = metrics.decode(errors="replace").splitlines()
        done = [ln.rsplit(" ", 1)[1] for ln in lines if ln.startswith("vllm:request_success_total")]
        out["requests_before"] = int(sum(float(v) for v in done))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000")
    ap.add_argument(
        "--model", default=os.environ.get("SERVED_MODEL_NAME", "Qwen3-8B"), help="served model name"
    )
    ap.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder (default: the model folder from the settings)",
    )
    ap.add_argument("--label", required=True, help="name of this configuration in the report")
    ap.add_argument("--concurrency", default="1,8,32,64,128")
    ap.add_argument("--input-len", type=int, default=1000)
    ap.add_argument("--output-len", type=int, default=500)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the number of requests")
    ap.add_argument(
        "--seed", type=int, default=None, help="first prompt seed (default: new every run)"
    )
    ap.add_argument("--ready-s", type=float, default=None, help="time to ready to record")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    from scripts.stack.settings import read_keys

    if a.tokenizer is None:
        from scripts.stack.settings import load

        a.tokenizer = str(load().model_path)
    key_file = os.environ.get("API_KEY_FILE")
    if key_file and not os.environ.get("OPENAI_API_KEY"):  # vllm bench sends OPENAI_API_KEY
        os.environ["OPENAI_API_KEY"] = (read_keys(Path(key_file).read_text()) or [""])[0]
    record = {
        "label": a.label,
        "vllm": version("vllm"),
        "torch": version("torch"),
        "card": card(),
        "host": platform.node(),
        "date": time.strftime("%Y-%m-%d"),
        "input_len": a.input_len,
        "output_len": a.output_len,
        "ready_s": a.ready_s,
        "meta": dict(kv.split("=", 1) for kv in a.meta),
        "server": server_facts(a.base_url, os.environ.get("OPENAI_API_KEY")),
        "results": {},
    }
    seed = secrets.randbelow(2**31) if a.seed is None else a.seed
    for i, c in enumerate(int(x) for x in a.concurrency.split(",")):
        n = prompts_for(c, a.scale)
        r = bench_once(a.base_url, a.model, a.tokenizer, c, n, a.input_len, a.output_len, seed + i)
        r["seed"] = seed + i
        record["results"][str(c)] = r
        print(
            f"bench {a.label} C={c:<4} n={n:<4} out {r['output_throughput']:8.1f} tok/s  "
            f"TTFT p50 {r['median_ttft_ms']:8.1f} ms  TPOT p50 {r['median_tpot_ms']:6.2f} "
            f"p99 {r['p99_tpot_ms']:6.2f} ms  failed {r['failed']}",
            flush=True,
        )
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
