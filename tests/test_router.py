"""Replicas behind vllm-router: the generated Compose override (scripts/replicas.py), the router's
argument list (scripts/router.py), and the real vllm-router (PyPI) in front of stand-in workers:
it spreads requests, drops a worker that stops answering /health and takes it back, by itself.
The same with real vLLM replicas runs in tests/test_compose.py (Docker)."""

from __future__ import annotations

import http.server
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from scripts import router
from scripts.stack.settings import load
from tests.conftest import ROOT, free_port
from tests.fixtures.gateway import Gateway, nginx_or_skip

H100_LINE = (ROOT / "tests/fixtures/hosts/h100/nvidia-smi.csv").read_text().splitlines()[0]


def fake_nvidia_smi(tmp_path: Path, n: int) -> dict[str, str]:
    """PATH with an nvidia-smi that prints the recorded H100 line for n GPUs."""
    rest = H100_LINE.split(", ", 1)[1]
    lines = "".join(f"{i}, {rest}\\n" for i in range(n))
    tool = tmp_path / "bin" / "nvidia-smi"
    tool.parent.mkdir(exist_ok=True)
    tool.write_text(f"#!/bin/sh\nprintf '{lines}'\n")
    tool.chmod(0o755)
    return {"PATH": f"{tool.parent}:{os.environ['PATH']}"}


def replicas(tmp_path: Path, *files: str, **env: str) -> subprocess.CompletedProcess:
    out = tmp_path / "compose.router.yaml"
    args = [a for f in files for a in ("-f", f)]
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_COUNT", "TENSOR_"))}
    full.update(COMPOSE_ENV_FILES=str(tmp_path / "empty.env"), **env)
    (tmp_path / "empty.env").write_text("")
    return subprocess.run(
        [sys.executable, "-m", "scripts.replicas", *args, "--out", str(out)],
        cwd=ROOT, env=full, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


needs_compose = pytest.mark.skipif(shutil.which("docker") is None, reason="needs docker compose")


@pytest.mark.unit
@needs_compose
def test_gpu_replicas_get_their_own_gpus(tmp_path):
    r = replicas(tmp_path, GPU_COUNT="4", TENSOR_PARALLEL_SIZE="2", **fake_nvidia_smi(tmp_path, 4))
    assert r.returncode == 0, r.stderr
    files = ["-f", "compose.yaml", "-f", str(tmp_path / "compose.router.yaml")]
    cfg = subprocess.run(
        ["docker", "compose", *files, "config", "--format", "json"], cwd=ROOT, text=True,
        capture_output=True, env={**os.environ, "GPU_COUNT": "4", "TENSOR_PARALLEL_SIZE": "2",
                                  "COMPOSE_ENV_FILES": str(tmp_path / "empty.env")},
    )  # fmt: skip
    assert cfg.returncode == 0, cfg.stderr
    services = json.loads(cfg.stdout)["services"]
    groups = {
        name: services[name]["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
        for name in ("vllm-0", "vllm-1")
    }
    assert groups == {"vllm-0": ["0", "1"], "vllm-1": ["2", "3"]}
    assert "vllm-2" not in services
    for name in ("vllm-0", "vllm-1"):  # each a TP=2 server with one engine group
        env = services[name]["environment"]
        assert env["GPU_COUNT"] == "2" and env["TENSOR_PARALLEL_SIZE"] == "2", env
        assert services[name]["command"] == ["python", "-m", "scripts.serve"]
    front = services["vllm"]  # the router, where the gateway already points
    assert front["command"] == ["python", "-m", "scripts.router"] and "deploy" not in front
    assert set(front["depends_on"]) == {"vllm-0", "vllm-1"}
    assert services["gateway"]["environment"]["GATEWAY_UPSTREAM"] == "vllm:8000"


@pytest.mark.unit
@needs_compose
@pytest.mark.parametrize(
    "env, gpus, needle",
    [
        ({"GPU_COUNT": "3", "TENSOR_PARALLEL_SIZE": "2"}, 4,
         "GPU_COUNT=3 is not a multiple of TENSOR_PARALLEL_SIZE=2"),
        ({"GPU_COUNT": "4"}, 2, "GPU_COUNT=4 but this host shows 2 GPU(s); fix: GPU_COUNT=2"),
        ({"GPU_COUNT": "2", "NVIDIA_VISIBLE_DEVICES": "1"}, 2,
         "GPU_COUNT=2 but this host shows 1 GPU(s)"),
        ({"GPU_COUNT": "2", "ROUTER_WORKERS": "http://vllm-0:8000 http://no-such-host.invalid:8000"},
         2, "ROUTER_WORKERS: http://no-such-host.invalid:8000 does not answer"),
    ],
)  # fmt: skip
def test_bad_input_stops_with_one_line_before_anything_starts(tmp_path, env, gpus, needle):
    r = replicas(tmp_path, **env, **fake_nvidia_smi(tmp_path, gpus))
    assert r.returncode == 2 and needle in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "fix" in r.stderr, r.stderr
    assert not (tmp_path / "compose.router.yaml").exists()


class Worker(http.server.ThreadingHTTPServer):
    """A stand-in replica: /health 200 (or 503 when sick), completions answered with its name."""

    def __init__(self, name: str):
        self.name, self.sick, self.served = name, False, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.answer(503 if outer.sick else 200, {"ok": not outer.sick})

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.served += 1
                auth = self.headers.get("Authorization")
                self.answer(200, {"worker": outer.name, "auth": auth})

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def post(port: int) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        data=json.dumps({"model": "Qwen3-8B", "prompt": "hi", "max_tokens": 1}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer k1"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def workers_state(port: int) -> dict[str, bool]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/workers", timeout=5) as r:
        return {w["url"]: w["is_healthy"] for w in json.loads(r.read())["workers"]}


@pytest.mark.native
def test_the_real_router_spreads_drops_and_readmits_by_itself(tmp_path):
    if shutil.which("vllm-router") is None:
        pytest.skip("vllm-router is not installed (requirements/stack.txt)")
    a, b = Worker("a"), Worker("b")
    port, metrics = free_port(), free_port()
    env = {**os.environ, "ROUTER_WORKERS": f"{a.url} {b.url}", "GPU_COUNT": "2"}
    log = (tmp_path / "router.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.router", "--host", "127.0.0.1", "--port", str(port),
         "--metrics-port", str(metrics)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        t0 = time.monotonic()
        while True:
            try:
                if sum(workers_state(port).values()) == 2:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "router.log").read_text()[-2000:]
            assert time.monotonic() - t0 < 60, "router not up"
            time.sleep(0.2)
        answers = [post(port) for _ in range(20)]
        split = (a.served, b.served)
        assert {x["worker"] for x in answers} == {"a", "b"}
        assert {x["auth"] for x in answers} == {"Bearer k1"}  # the client's key goes through
        assert abs(a.served - b.served) <= 2, (a.served, b.served)  # round_robin
        b.sick = True
        t_sick = time.monotonic()
        while workers_state(port)[b.url]:
            assert time.monotonic() - t_sick < 4 * router.HEALTH_INTERVAL_S, "b never dropped"
            time.sleep(0.2)
        dropped = time.monotonic() - t_sick
        served = b.served
        assert {post(port)["worker"] for _ in range(10)} == {"a"}
        assert b.served == served
        b.sick = False
        t_well = time.monotonic()
        while not workers_state(port)[b.url]:
            assert time.monotonic() - t_well < 4 * router.HEALTH_INTERVAL_S, "b never came back"
            time.sleep(0.2)
        back = time.monotonic() - t_well
        assert "b" in {post(port)["worker"] for _ in range(10)}
        print(f"\nvllm-router: 20 requests split {split}; a sick worker left "
              f"after {dropped:.1f}s and came back {back:.1f}s after it was well")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(30)
        a.shutdown()
        b.shutdown()


@pytest.fixture
def gateways(tmp_path):
    """Two other hosts' gateways (the bundle's gateway/run.sh, Debian's nginx) in front of a
    stand-in replica: `ours` takes this host's key, `theirs` only a key of its own."""
    nginx_or_skip()
    upstream = Worker("replica")
    key = secrets.token_urlsafe(32)
    made = {}
    for name, keys in (("ours", [key]), ("theirs", [secrets.token_urlsafe(32)])):
        (tmp_path / name).mkdir()
        made[name] = Gateway(tmp_path / name, upstream.url.removeprefix("http://"), keys).start()
    (tmp_path / "api_key").write_text(f"# this host's keys\n{key}\n")
    try:
        yield made, tmp_path / "api_key"
    finally:
        for gw in made.values():
            gw.stop()
        upstream.shutdown()


@pytest.mark.native
def test_bad_router_workers_stop_the_replicas_command_with_one_line(tmp_path, gateways):
    """`python3 -m scripts.replicas` (before anything starts) against real gateways: a worker
    whose gateway refuses this host's key (401), this host's own gateway, the same worker twice,
    a worker that does not answer: exit 2, one line naming ROUTER_WORKERS, the worker and the
    fix, and no compose.router.yaml; the good list is taken."""
    gw, key_file = gateways
    ours, theirs = gw["ours"].url, gw["theirs"].url
    port = gw["ours"].port
    base = {"GPU_COUNT": "2", "API_KEY_FILE": str(key_file), **fake_nvidia_smi(tmp_path, 2)}
    cases = {
        f"{ours} {theirs}": f"ROUTER_WORKERS: {theirs} refuses this host's API key (HTTP 401",
        f"http://vllm-0:8000 {ours}": f"ROUTER_WORKERS: {ours} is this host's own gateway",
        f"{ours} {ours}/": "the same worker twice",
        f"{ours} http://127.0.0.1:{free_port()}": "does not answer as a qwen3-vllm-stack gateway",
    }
    for workers, needle in cases.items():
        # HOST_PORT: this host publishes its gateway on `ours`'s port only in the second case
        own = str(port) if "vllm-0" in workers else str(free_port())
        r = replicas(tmp_path, ROUTER_WORKERS=workers, HOST_PORT=own, **base)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert needle in lines[0] and "ROUTER_WORKERS" in lines[0] and "fix" in lines[0], lines
        assert not (tmp_path / "compose.router.yaml").exists()
        print(f"\n{workers} -> {lines[0]}")
    r = replicas(tmp_path, ROUTER_WORKERS=f"http://vllm-0:8000 {ours}", HOST_PORT=str(free_port()),
                 **base)  # fmt: skip
    assert r.returncode == 0, r.stderr  # ROUTER_WORKERS reaches the router by name
    assert '"ROUTER_WORKERS": null' in (tmp_path / "compose.router.yaml").read_text()


@pytest.mark.unit
def test_this_host_is_its_loopback_and_its_own_addresses_only():
    own = socket.gethostbyname(socket.gethostname())
    assert router.is_this_host("127.0.0.1") and router.is_this_host("localhost")
    assert router.is_this_host(own), own  # an address of this machine: bindable
    assert not router.is_this_host("192.0.2.1")  # TEST-NET-1: nobody's
    assert not router.is_this_host("no-such-host.invalid")


@pytest.mark.unit
def test_router_arguments_follow_the_settings():
    s = load({"GPU_COUNT": "4", "TENSOR_PARALLEL_SIZE": "2", "ROUTER_POLICY": "power_of_two"})
    args = router.build_args(s)
    urls = args[args.index("--worker-urls") + 1 : args.index("--policy")]
    assert urls == ["http://vllm-0:8000", "http://vllm-1:8000"]
    assert args[args.index("--policy") + 1] == "power_of_two"
    one = router.build_args(load({"ROUTER_WORKERS": "http://10.0.0.2:8000/"}))
    assert one[one.index("--worker-urls") + 1 : one.index("--policy")] == ["http://10.0.0.2:8000"]
    assert one[one.index("--policy") + 1] == "round_robin"  # vllm-router: p2c needs 2 workers
