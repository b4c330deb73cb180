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
import ipaddress
import os
import shlex
import socket
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


def is_this_host(host: str) -> bool:
    """Does `host` name this machine (as seen from here): loopback, or an address a socket can
    bind to here (only this machine's own addresses can be bound)?"""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, _, _, _, addr in infos:
        ip = ipaddress.ip_address(addr[0])
        if ip.is_loopback:
            return True
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((addr[0], 0))
                return True
            except OSError:
                continue
    return False


def _status(url: str, key: str | None, timeout: float) -> tuple[int | None, str]:
    """GET url (with the key, if any): its HTTP status, or None and why not."""
    req = urllib.request.Request(url)
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, ""
    except urllib.error.HTTPError as e:
        return e.code, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return None, str(getattr(e, "reason", e))


def check_workers(
    s: Settings,
    local: list[str] | None = None,
    timeout: float = 5,
    key: str | None = None,
    own_port: int | None = None,
) -> None:
    """Every worker that is not one of this host's replicas (`local`, which may still be
    starting) must be another host's gateway that answers now: GET /health 200 (or 503 while
    its vLLM loads), and, given the `key` the router will forward (the gateway's first), not 401
    on GET /v1/models. Given this host's published gateway port (`own_port`, on the host), a
    worker at this machine's own address and that port is refused: the router would send
    requests to itself. A typo, a host that is down, a key the worker does not take: one line
    instead of a router that waits half an hour or answers 401 to every request."""
    if local is None:
        local = s.layout.services()
    for url in workers(s):
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if host in local:
            continue
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if own_port is not None and port == own_port and is_this_host(host):
            raise WorkerError(
                f"ROUTER_WORKERS: {url} is this host's own gateway ({host} is this machine, "
                f"{port} its HOST_PORT): the router would send requests to itself; fix: remove "
                f"it from ROUTER_WORKERS in .env (this host's replicas are "
                f"{' '.join(s.layout.local_workers())})"
            )
        status, why = _status(url + "/health", None, timeout)
        if status not in (200, 503):
            raise WorkerError(
                f"ROUTER_WORKERS: {url} does not answer as a qwen3-vllm-stack gateway "
                f"({why or f'HTTP {status} from /health'}); fix: start that host's stack or "
                "correct its address in ROUTER_WORKERS in .env (each host's gateway: "
                "http(s)://HOST:PORT)"
            )
        if key and _status(url + "/v1/models", key, timeout)[0] == 401:
            raise WorkerError(
                f"ROUTER_WORKERS: {url} refuses this host's API key (HTTP 401 from /v1/models; "
                "the router forwards this gateway's first key to every worker); fix: add this "
                "host's first key (API_KEY_FILE) to that host's key file, a line of its own, "
                "and restart its gateway"
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
        key = s.resolved_api_key()  # the gateway's first key, which it sends the router
    except SettingsError:
        key = None  # no key here: the gateway's own check is the one that counts
    try:
        check_workers(s, key=key)
    except WorkerError as e:
        print(f"router: {e}", file=sys.stderr)
        return 2
    print(f"router: {shlex.join(cmd)}", file=sys.stderr, flush=True)
    os.execvp(cmd[0], cmd)


if __name__ == "__main__":
    sys.exit(main())
