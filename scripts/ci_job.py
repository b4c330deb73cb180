"""The CI verdict: one command whose exit status says whether the stack serves.

    python3 -m scripts.ci_job [--timeout 3600] [--logs-dir DIR] [--no-build]

Run from the repo root with the host's python3 (stdlib only) and Docker Compose (the plugin; reads
the project through scripts/stack/compose.py). It builds the image (with BuildKit, through
docker/build-image.sh), brings the stack up (`up -d`, which waits for download, vllm and the
gateway), waits for the smoke suite (`docker compose wait smoke`), prints the state of every service
and the logs of each one that failed, and tears the stack down with `down`: the `models` and `cache`
volumes are kept, so the next job skips the download and starts warm. A stack left running under the
same project (a cancelled job) is taken down first. All of it within --timeout seconds, of which the
last TEARDOWN_S are kept for the teardown.

It reads the stack as `docker compose` does: compose.yaml (COMPOSE_FILE for overrides, e.g.
`compose.yaml:compose.cpu.yaml`), COMPOSE_PROJECT_NAME, COMPOSE_PROFILES, the environment over
`.env`. (Not `up --exit-code-from smoke`: it stops the whole stack as soon as download exits 0.)

Exit status: 0 smoke passed; smoke's own exit status when it failed; 1 the stack never got to
smoke (build, download, vllm or gateway failed: their logs are printed); 2 a usage or setup
error (no compose, a missing secret file); 124 --timeout ran out; 130/143 interrupted. The stack
is torn down in every case.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from scripts.stack.compose import Compose, ComposeError, secret_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = Compose()  # Compose's own choice of files: COMPOSE_FILE, else compose.yaml
VERDICT = "smoke"  # the one-shot service whose exit status is the verdict
TEARDOWN_S = 120  # kept at the end of --timeout for `down` (gateway's grace period: 90 s)
DEFAULT_TIMEOUT = 3600  # a first GPU run: the image, 16 GB of weights, kernel compilation
SETUP_EXIT, STACK_EXIT, TIMEOUT_EXIT = 2, 1, 124
# .github/workflows/gpu-smoke.yml: the repository variable GPU_RUNNER_LABELS, checked here
DEFAULT_RUNNER_LABELS = ["self-hosted", "linux", "x64", "gpu"]
GITHUB_HOSTED = re.compile(r"^(ubuntu|windows|macos)-", re.I)
INIT_SECRETS = "python3 -m scripts.init_secrets"


class Stop(Exception):
    """SIGTERM or SIGINT: tear down, then exit 128 + signal."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


class TimedOut(Exception):
    pass


def say(msg: str) -> None:
    print(f"ci_job: {msg}", flush=True)


class Job:
    def __init__(self, timeout: float, log_lines: int, logs_dir: Path | None):
        self.t0 = time.monotonic()
        self.deadline = self.t0 + timeout - TEARDOWN_S
        self.timeout = timeout
        self.log_lines = log_lines
        self.logs_dir = logs_dir
        self.config: dict = {}
        self.secret_settings: dict[str, str] = {}

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def compose(self, *args: str, capture: bool = False, limit: float | None = None, what=""):
        """`docker compose ARGS`, streamed to our output unless captured. `limit` bounds it; by
        default the job's deadline does (TimedOut when it runs out)."""
        if limit is None:
            limit = self.deadline - time.monotonic()
            if limit <= 0:
                raise TimedOut(what or " ".join(args))
        sys.stdout.flush()
        try:
            return subprocess.run(
                ["docker", "compose", *args], cwd=ROOT, text=True, timeout=limit,
                capture_output=capture, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired as e:
            raise TimedOut(what or " ".join(args)) from e

    def build(self, service: str):
        """The service's image with BuildKit: `docker compose build` where buildx allows, else the
        BuildKit of an older Docker CLI (docker/build-image.sh says which it used)."""
        limit = self.deadline - time.monotonic()
        if limit <= 0:
            raise TimedOut(f"build {service}")
        sys.stdout.flush()
        try:
            return subprocess.run(["bash", "docker/build-image.sh", "--compose", service], cwd=ROOT,
                                  text=True, timeout=limit, stdin=subprocess.DEVNULL)  # fmt: skip
        except subprocess.TimeoutExpired as e:
            raise TimedOut(f"build {service}") from e

    # --- before anything starts ----------------------------------------------------------------

    def load_config(self) -> str | None:
        """The resolved stack (`docker compose config`, and as written, for the secrets'
        settings); an error message or None."""
        try:
            self.config = COMPOSE.config()
            self.secret_settings = secret_settings(COMPOSE.config(interpolate=False))
        except ComposeError as e:
            return str(e)
        if VERDICT not in self.config.get("services", {}):
            return f"the stack has no `{VERDICT}` service (COMPOSE_FILE, COMPOSE_PROFILES?)"
        return None

    def missing_secrets(self) -> list[str]:
        """Secret files the active services mount that are missing or empty (compose would stop
        with 'bind source path does not exist'), each with its setting and the fix."""
        used = {s["source"] for svc in self.config["services"].values()
                for s in svc.get("secrets") or []}  # fmt: skip
        settings = self.secret_settings
        problems = []
        for name in sorted(used):
            path = Path(self.config.get("secrets", {}).get(name, {}).get("file") or "")
            if path.is_file() and path.stat().st_size > 0:
                continue
            setting = settings.get(name)
            where = f" ({setting})" if setting else ""
            problems.append(
                f"secret `{name}`: {path}{where} is {'empty' if path.is_file() else 'missing'}; "
                f"run `{INIT_SECRETS}` to write it"
                + (f", or set {setting} to your own file" if setting else "")
            )
        return problems

    # --- the run -----------------------------------------------------------------------------

    def images_to_build(self) -> list[str]:
        """One service per image that has a build section (the services sharing an image would
        each send the build context again with the classic builder)."""
        seen: dict[str, str] = {}
        for name, svc in sorted(self.config["services"].items()):
            if svc.get("build") is not None:
                seen.setdefault(svc.get("image") or name, name)
        return sorted(seen.values())

    def states(self) -> dict[str, dict]:
        r = self.compose("ps", "-a", "--format", "json", capture=True, limit=60)
        text = r.stdout.strip()
        # compose before 2.21 prints one JSON array, later ones a JSON line per container
        lines = [text] if text.startswith("[") else text.splitlines()
        rows = [row for ln in lines if ln.strip() for row in _as_list(json.loads(ln))]
        return {row["Service"]: row for row in rows}

    def one_shot(self, service: str) -> bool:
        return (self.config["services"].get(service, {}).get("restart") or "no") == "no"

    def failed(self, states: dict[str, dict], timed_out: bool) -> list[str]:
        """Services that exited non-zero or are unhealthy; after a timeout also those still on
        their way (a one-shot still running, a healthcheck still starting, restarting). Those
        never started (created) have no logs: the state table shows them."""
        out = []
        for name, st in sorted(states.items()):
            state, health, code = st.get("State"), st.get("Health") or "", st.get("ExitCode", 0)
            broken = (state == "exited" and code != 0) or health == "unhealthy" or state == "dead"
            on_its_way = (
                state in ("restarting", "paused")
                or health == "starting"
                or (state == "running" and not health and self.one_shot(name))
            )
            if broken or (timed_out and on_its_way):
                out.append(name)
        return out

    def report(self, timed_out: bool) -> None:
        try:
            states = self.states()
        except (TimedOut, ValueError) as e:
            say(f"could not list the services: {e}")
            return
        say("services:")
        for name, st in sorted(states.items()):
            code = f" {st.get('ExitCode')}" if st.get("State") == "exited" else ""
            health = f" ({st['Health']})" if st.get("Health") else ""
            print(f"  {name:<12} {st.get('State')}{code}{health}", flush=True)
        for name in self.failed(states, timed_out):
            tail = ["--no-log-prefix", "--tail", str(self.log_lines)]
            r = self.compose("logs", "--no-color", *tail, name, capture=True, limit=60)
            print(f"----- {name}: last {self.log_lines} log lines -----\n{r.stdout}{r.stderr}"
                  f"----- end of {name} -----", flush=True)  # fmt: skip
        if self.logs_dir:
            self.logs_dir.mkdir(parents=True, exist_ok=True)
            for name in states:
                r = self.compose("logs", "--no-color", "--no-log-prefix", "--timestamps", name,
                                 capture=True, limit=60)  # fmt: skip
                (self.logs_dir / f"{name}.log").write_text(r.stdout + r.stderr)
            (self.logs_dir / "ps.json").write_text(json.dumps(states, indent=1))
            say(f"full logs of every service in {self.logs_dir}/")

    def teardown(self) -> None:
        t = time.monotonic()
        try:
            r = self.compose("down", "--remove-orphans", capture=True, limit=TEARDOWN_S)
            ok = r.returncode == 0
            why = r.stderr.strip()[-500:]
        except TimedOut:
            ok, why = False, f"did not finish within {TEARDOWN_S} s"
        label = f"label=com.docker.compose.project={self.config.get('name', '')}"
        v = subprocess.run(["docker", "volume", "ls", "-q", "--filter", label],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        kept = " ".join(v.stdout.split()) or "none"
        if ok:
            say(f"torn down in {time.monotonic() - t:.0f} s (`down`); volumes kept: {kept}")
        else:
            say(f"teardown (`docker compose down`) failed: {why}; volumes: {kept}")

    def run(self, build: bool) -> int:
        """Up, wait for smoke, report; the caller tears down."""
        self.compose("down", "--remove-orphans", capture=True, limit=TEARDOWN_S)  # a leftover
        if build:
            services = self.images_to_build()
            say(f"building {', '.join(services) or 'nothing'} ({self.elapsed():.0f} s)")
            for service in services:  # BuildKit, as the Dockerfile needs (docker/build-image.sh)
                if self.build(service).returncode != 0:
                    say("FAIL: the image build failed (its output is above)")
                    return STACK_EXIT
        t_up = time.monotonic()
        say(f"starting the stack: `docker compose up -d` ({self.elapsed():.0f} s)")
        up = self.compose("up", "-d", "--no-color", what="up: download, vllm, gateway")
        if up.returncode != 0:
            self.report(timed_out=False)
            took = time.monotonic() - t_up
            say(f"FAIL: the stack did not get to {VERDICT} (`up` exited {up.returncode} after "
                f"{took:.0f} s; the logs of the failed services are above)")  # fmt: skip
            return STACK_EXIT
        say(f"stack up in {time.monotonic() - t_up:.0f} s; waiting for {VERDICT}")
        t_smoke = time.monotonic()
        code = self.compose("wait", VERDICT, capture=True, what=f"wait {VERDICT}").returncode
        r = self.compose("logs", "--no-color", "--tail", "5", VERDICT, capture=True, limit=60)
        print(r.stdout, end="", flush=True)
        smoke_s = time.monotonic() - t_smoke
        if code == 0:
            self.report(timed_out=False)
            say(f"PASS: {VERDICT} exited 0 ({self.elapsed():.0f} s: up "
                f"{t_smoke - t_up:.0f} s, {VERDICT} {smoke_s:.0f} s)")  # fmt: skip
            return 0
        self.report(timed_out=False)
        say(f"FAIL: {VERDICT} exited {code} after {smoke_s:.0f} s (its logs are above)")
        return code


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def runner_labels(value: str) -> list[str]:
    """GPU_RUNNER_LABELS (a JSON list; empty: DEFAULT_RUNNER_LABELS), checked so that a wrong
    setting stops with a message instead of a job that waits for a runner or runs without a
    GPU. ValueError names the setting and the fix."""
    fix = (
        "set the repository variable GPU_RUNNER_LABELS (Settings > Secrets and variables > "
        "Actions > Variables) to your GPU runner's labels as a JSON list, e.g. "
        f"{json.dumps(DEFAULT_RUNNER_LABELS)}, or delete it for that default"
    )
    if not value.strip():
        return list(DEFAULT_RUNNER_LABELS)
    try:
        labels = json.loads(value)
    except ValueError:
        raise ValueError(f"GPU_RUNNER_LABELS={value!r} is not a JSON list; {fix}") from None
    if not (isinstance(labels, list) and labels):
        raise ValueError(f"GPU_RUNNER_LABELS={value!r} is not a list of labels; {fix}")
    if not all(isinstance(x, str) and x.strip() == x and x for x in labels):
        raise ValueError(f"GPU_RUNNER_LABELS={value!r}: every label must be a non-empty "
                         f"string without spaces around it; {fix}")  # fmt: skip
    hosted = [x for x in labels if GITHUB_HOSTED.match(x)]
    if hosted or "self-hosted" not in labels:
        what = f"names GitHub's hosted runner {hosted[0]}" if hosted else "lacks self-hosted"
        raise ValueError(
            f"GPU_RUNNER_LABELS={value!r} {what}: GitHub's hosted runners have no GPU, the job "
            f"must go to your self-hosted GPU runner; {fix}"
        )
    return labels


def _on_signal(signum, _frame):
    raise Stop(signum)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m scripts.ci_job",
        description="Bring the stack up, wait for the smoke suite, exit with its status, tear "
        "down (volumes kept).",
    )
    ap.add_argument("--timeout", type=int, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                    help=f"the whole job, teardown included ({DEFAULT_TIMEOUT})")  # fmt: skip
    ap.add_argument("--logs-dir", type=Path, help="write every service's full log here")
    ap.add_argument("--log-lines", type=int, default=150, help="lines printed per failed service")
    ap.add_argument("--no-build", action="store_true", help="use the images as they are")
    ap.add_argument("--runner-labels", metavar="JSON", help="only check GPU_RUNNER_LABELS (the "
                    "workflow's setting) and print `labels=...` for $GITHUB_OUTPUT")  # fmt: skip
    opts = ap.parse_args(argv)
    if opts.runner_labels is not None:
        try:
            print(f"labels={json.dumps(runner_labels(opts.runner_labels))}")
        except ValueError as e:
            print(f"::error title=GPU_RUNNER_LABELS::{e}", file=sys.stderr)
            return SETUP_EXIT
        return 0
    if opts.timeout < TEARDOWN_S + 30:
        ap.error(f"--timeout {opts.timeout} is too short: at least {TEARDOWN_S + 30} seconds "
                 f"({TEARDOWN_S} of them are kept for the teardown)")  # fmt: skip
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)

    job = Job(opts.timeout, opts.log_lines, opts.logs_dir)
    error = job.load_config()
    problems = [error] if error else job.missing_secrets()
    if problems:
        for p in problems:
            say(f"cannot start: {p}")
        return SETUP_EXIT
    say(f"project {job.config.get('name')}, files {os.environ.get('COMPOSE_FILE', 'compose.yaml')}"
        f", timeout {opts.timeout} s")  # fmt: skip
    code = STACK_EXIT
    try:
        code = job.run(build=not opts.no_build)
    except TimedOut as e:
        say(f"TIMEOUT: --timeout {opts.timeout} s ran out during `{e}` after "
            f"{job.elapsed():.0f} s; the services still on their way are below")  # fmt: skip
        job.report(timed_out=True)
        say(
            "the stack did not finish in time: raise --timeout if it was only slow (a first "
            "GPU run downloads 16 GB and compiles kernels), else the logs above say where it hangs"
        )
        code = TIMEOUT_EXIT
    except Stop as e:
        say(f"interrupted by {e}; tearing down")
        code = e.code
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        job.teardown()
        say(f"exit {code} after {job.elapsed():.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
