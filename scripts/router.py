"""Start vllm-router (the vLLM project's own Rust router, PyPI `vllm-router`) in front of the
replicas, from the settings. Its argument list is built here and nowhere else.

    python -m scripts.router            # validate, exec vllm-router
    python -m scripts.router --print    # print the command instead

Replicas are ROUTER_WORKERS, or, when that is empty, the compose replicas `vllm-0 ..` (the
layout's replicas: scripts/stack/layout.py). Removing a replica that fails its /health and
taking it back once it answers again is the router's own health checker; nothing of ours loops.
The router forwards the client's Authorization header: the gateway sends the first API key, so
every replica, remote gateways too, must accept that key.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import urllib.error
import urllib.parse
import urllib.request

from scripts.stack.settings import Settings, SettingsError, load

ROUTER_PORT = 8000
METRICS_PORT = 29000  # the router's own Prometheus metrics
HEALTH_INTERVAL_S = 5  # a dead replica is out after 2 failed checks, back after 1 good one
STARTUP_TIMEOUT_S = 1800  # the router waits this long for a first healthy replica (cold start)


def workers(s: Settings) -> list[str]:
    if s.router_workers:
        return [w.rstrip("/") for w in s.router_workers]
    return s.layout.local_workers()


class WorkerError(Exception):
    """str(): one line naming ROUTER_WORKERS and the fix."""


def check_workers(s: Settings, local: list[str] | None = None, timeout: float = 5) -> None:
    """Every worker that is not one of this host's replicas (`local`, which may still be
    starting) must answer GET /health now (another host's gateway: 200, or 503 while its vLLM
    loads): a typo or a host that is down stops the start with one line instead of a router
    that waits half an hour for it."""
    if local is None:
        local = s.layout.services()
    for url in workers(s):
        if (urllib.parse.urlsplit(url).hostname or "") in local:
            continue
        try:
            with urllib.request.urlopen(url + "/health", timeout=timeout) as r:
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except (urllib.error.URLError, OSError, ValueError) as e:
            status, why = None, str(getattr(e, "reason", e))
        if status in (200, 503):
            continue
        why = f"HTTP {status} from /health" if status is not None else why
        raise WorkerError(
            f"ROUTER_WORKERS: {url} does not answer as a qwen3-vllm-stack gateway ({why}); fix: "
            "start that host's stack or correct its address in ROUTER_WORKERS in .env (each "
            "host's gateway: http(s)://HOST:PORT)"
        )


def build_args(
    s: Settings, port: int = ROUTER_PORT, host: str = "0.0.0.0", metrics_port: int = METRICS_PORT
) -> list[str]:
    urls = workers(s)
    # one replica: every policy picks it, and vllm-router refuses power_of_two below 2 workers
    policy = (
        "round_robin" if len(urls) == 1 and s.router_policy == "power_of_two" else s.router_policy
    )
    return [
        "--host", host, "--port", str(port),
        "--worker-urls", *urls,
        "--policy", policy,
        "--health-check-endpoint", "/health",
        "--health-check-interval-secs", str(HEALTH_INTERVAL_S),
        "--health-check-timeout-secs", str(HEALTH_INTERVAL_S),
        "--health-failure-threshold", "2",
        "--health-success-threshold", "1",
        "--worker-startup-timeout-secs", str(STARTUP_TIMEOUT_S),
        "--worker-startup-check-interval", str(HEALTH_INTERVAL_S),
        "--cb-timeout-duration-secs", str(2 * HEALTH_INTERVAL_S),  # breaker: retry a replica soon
        "--request-timeout-secs", "1800",
        "--max-payload-size", str(8 << 20),
        "--prometheus-host", host, "--prometheus-port", str(metrics_port),
        "--log-level", "info",
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Start vllm-router from the settings")
    ap.add_argument("--print", action="store_true", help="print the command and exit")
    ap.add_argument("--port", type=int, default=ROUTER_PORT)
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--metrics-port", type=int, default=METRICS_PORT)
    opts = ap.parse_args(argv)
    try:
        s = load()
    except SettingsError as e:
        print(f"router: {e}", file=sys.stderr)
        return 2
    cmd = ["vllm-router", *build_args(s, opts.port, opts.host, opts.metrics_port)]
    if opts.print:
        print(shlex.join(cmd))
        return 0
    try:
        check_workers(s)
    except WorkerError as e:
        print(f"router: {e}", file=sys.stderr)
        return 2
    print(f"router: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
