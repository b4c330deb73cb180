"""The vllm container's healthcheck: is vLLM up, and is its engine making progress?

vLLM's /health answers 200 while its engine is hung (a stopped engine process, a hung GPU: vLLM
#36960), and Docker restarts a container only when it exits. So this check asks the engine for
progress, not the API server for an answer: between two checks the engine's own counters (tokens
prefilled and generated, on /metrics) advance whenever it works, however long its queue; when they
stand still, a one-token completion tells an idle engine (it answers) from a hung one (it does not,
and its counters stay still while the probe waits; a slow one's move). From the first check that
finds it so, vLLM's /health answers 503 (HealthGate, a vLLM middleware): the router takes the
replica out and the gateway's /health says it. After HANG_TIMEOUT seconds with no progress and no
answer, the check ends vLLM (SIGKILL of the process Docker's init started, compose.yaml `init:
true`): the container exits and its `restart: unless-stopped` starts it again. Before vLLM has
first answered /health (loading, compiling), only /health counts.

    python -m scripts.liveness            # compose.yaml's healthcheck: exit 0 healthy, 1 not
    python -m scripts.liveness --no-end   # Kubernetes' liveness probe (scripts/k8s.py): exit 1
                                          # once HANG_TIMEOUT has passed; the kubelet restarts

Its one setting is HANG_TIMEOUT (scripts/stack/settings.py; 0: /health alone, as before). The
state between two checks lives in /tmp (the container's tmpfs), keyed by the container's start.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from scripts.stack.settings import Settings, SettingsError, load

STATE = Path("/tmp/qvs-liveness.json")
HEALTH_WAIT_S = 5  # /health and /metrics answer at once when the API server is alive
PROBE_WAIT_S = 5  # a one-token completion on an idle engine takes milliseconds
# the engine's progress: every scheduler step prefills or generates tokens (vLLM's V1 metrics,
# summed over the engines of a data-parallel server)
COUNTERS = ("vllm:prompt_tokens_total", "vllm:generation_tokens_total")
_SAMPLE = re.compile(r"^([a-z_:]+)(?:\{[^}]*\})? ([0-9.eE+-]+|NaN)$")


def progress(metrics: str) -> float | None:
    """The sum of the progress counters in a Prometheus text page; None when it has none."""
    total, seen = 0.0, False
    for line in metrics.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(1) in COUNTERS and m.group(2) != "NaN":
            total, seen = total + float(m.group(2)), True
    return total if seen else None


@dataclass
class State:
    started: str = ""  # the container's start (PID 1's start time): a restart starts afresh
    up: bool = False  # /health has answered 200 since that start
    progress: float | None = None
    stalled_since: float | None = None  # time.monotonic() of the first check without progress

    @classmethod
    def read(cls, started: str) -> State:
        try:
            state = cls(**json.loads(STATE.read_text()))
        except (OSError, ValueError, TypeError):
            return cls(started)
        return state if state.started == started else cls(started)

    def write(self) -> None:
        tmp = STATE.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(STATE)


def container_start() -> str:
    try:  # field 22 of /proc/1/stat: PID 1's start, in clock ticks since boot
        return Path("/proc/1/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _request(url: str, timeout: float, body: dict | None = None, key: str = "") -> tuple:
    """(HTTP status or None, body text)"""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except (urllib.error.URLError, OSError, ValueError):
        return None, ""


@dataclass
class Engine:
    """vLLM's API server in this container, as the check sees it."""

    s: Settings

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.s.port}"

    def health(self) -> int | None:
        return _request(self.base + "/health", HEALTH_WAIT_S)[0]

    def progress(self) -> float | None:
        status, text = _request(self.base + "/metrics", HEALTH_WAIT_S)
        return progress(text) if status == 200 else None

    def answers(self) -> bool | None:
        """A one-token completion: True answered, False no answer in PROBE_WAIT_S (or a 5xx),
        None when vLLM refused it (a 4xx: says nothing about the engine)."""
        body = {"model": self.s.served_model_name, "prompt": "1", "max_tokens": 1}
        key = self.s.resolved_api_key()
        status, _ = _request(self.base + "/v1/completions", PROBE_WAIT_S, body, key)
        if status is not None and 400 <= status < 500:
            return None
        return status == 200


def check(engine: Engine, state: State, timeout: int, now: float) -> tuple[bool, str, bool]:
    """One check: (healthy, what it saw, end vLLM now). Updates `state`."""
    health = engine.health()
    if not state.up:
        if health != 200:
            return False, f"starting: /health answers {health or 'nothing'}", False
        state.up, state.progress = True, engine.progress()
        return True, "up: /health answers 200", False
    if timeout == 0:
        return health == 200, f"/health answers {health or 'nothing'}", False
    if health is not None:  # the API server answers (a 503 may be HealthGate's, below)
        seen = engine.progress()
        if seen is not None and seen != state.progress:
            moved, state.progress, state.stalled_since = seen - (state.progress or 0), seen, None
            return True, f"busy: the engine did {moved:.0f} tokens since the last check", False
        answered = engine.answers()
        after = engine.progress()
        if answered is not False:
            state.progress, state.stalled_since = after, None
            said = "answers a one-token completion" if answered else "refused the probe (4xx)"
            return True, f"idle: the engine {said}", False
        if after is not None and after != state.progress:  # seen, when it was read
            # the probe waited, but the engine moved meanwhile: slow (a load that just came, a
            # starved host), not hung; a false alarm here would take a loaded replica out
            state.progress, state.stalled_since = after, None
            return True, "busy: the probe waited, but the engine's counters moved meanwhile", False
        what = f"no progress, a one-token completion unanswered in {PROBE_WAIT_S}s"
    else:
        what = "/health answers nothing"
    if state.stalled_since is None:
        state.stalled_since = now
    stalled = now - state.stalled_since
    if stalled < timeout:
        return False, f"{what} for {stalled:.0f}s of HANG_TIMEOUT={timeout}s", False
    return False, f"{what} for {stalled:.0f}s (HANG_TIMEOUT={timeout}s): ending vLLM", True


class HealthGate:
    """vLLM middleware (`--middleware scripts.liveness.HealthGate`, scripts/stack/vllm_args.py):
    while the last check found the engine stalled, GET /health answers 503 instead of vLLM's 200,
    so that the router's health checks take the replica out, and the gateway's /health says so,
    before the check ends vLLM. Every other request passes untouched."""

    def __init__(self, app):
        self.app = app
        self.started = container_start()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/health":
            return await self.app(scope, receive, send)
        state = State.read(self.started)  # another start's state, or none: not stalled
        if state.stalled_since is None:
            return await self.app(scope, receive, send)
        stalled = time.monotonic() - state.stalled_since
        message = (f"the engine has made no progress for {stalled:.0f}s (scripts/liveness.py); "
                   "vLLM restarts once HANG_TIMEOUT has passed")  # fmt: skip
        body = json.dumps({"error": {"message": message, "type": "ServiceUnavailable",
                                     "code": 503}}).encode()  # fmt: skip
        headers = [(b"content-type", b"application/json"), (b"retry-after", b"10")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def end_vllm() -> str:
    """SIGKILL what Docker's init (PID 1) started: vLLM's API server; the engine processes end
    with the container. '' when done, else why not."""
    init = Path("/proc/1/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    if not re.search(r"(^|/)(docker-init|tini|catatonit)$", init):
        return f"PID 1 is {init!r}, not an init: set `init: true` on the vllm service"
    ended = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        pid = int(stat.parent.name)
        if ppid == 1 and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
                ended.append(pid)
            except OSError:
                continue
    return "" if ended else "nothing to end: no process under PID 1"


def say(line: str) -> None:
    """To the healthcheck's output (docker inspect) and, for what matters, the container's log."""
    print(line, flush=True)
    try:
        with open("/proc/1/fd/1", "w") as log:
            log.write(line + "\n")
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.liveness", description=__doc__.split(
        "\n\n")[0])  # fmt: skip
    ap.add_argument("--no-end", action="store_true", help="never end vLLM; exit 1 only once "
                    "HANG_TIMEOUT has passed without progress (Kubernetes: the kubelet restarts "
                    "the container on a failed liveness probe)")  # fmt: skip
    no_end = ap.parse_args(argv).no_end
    try:
        s = load()
    except SettingsError as e:
        print(f"liveness: {e}")
        return 1
    state, now = State.read(container_start()), time.monotonic()
    try:
        healthy, seen, end = check(Engine(s), state, s.hang_timeout, now)
    except SettingsError as e:  # the API key file went away
        print(f"liveness: {e}")
        return 1
    began = state.stalled_since == now  # the first check without progress: into the log too
    state.write()
    if no_end:
        (say if began or end else print)(f"liveness: {seen}")
        return 1 if end or (s.hang_timeout == 0 and not healthy) else 0
    if not end:
        (say if began else print)(f"liveness: {seen}")
        return 0 if healthy else 1
    why = end_vllm()
    say(f"liveness: {seen}" + (f"; cannot: {why}" if why else " (Docker restarts it)"))
    return 1


if __name__ == "__main__":
    sys.exit(main())
