"""`python3 -m scripts.ci_job`, the README's CI command, on the real CPU stack (compose.yaml +
compose.cpu.yaml + tests/compose.test.yaml, the session's `stack`, which the compose tests share):
its exit status is the verdict, the failed service's logs are printed, a hung stack ends at
--timeout, and every run tears down but keeps the volumes.
    bash tests/run stack -k test_ci_job
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from scripts import ci_job
from scripts.stack import compose
from tests.conftest import ROOT, assert_smoke_passed
from tests.fixtures.readme import assert_printed

COMMAND = ["python3", "-m", "scripts.ci_job"]  # the README's CI command, as it is
CPU_FILES = "compose.yaml:compose.cpu.yaml"  # what a user of the CPU stack sets
TEST_FILES = f"{CPU_FILES}:tests/compose.test.yaml"  # and the offline hub


def run_job(s, *args: str, files: tuple[str, ...] = (), limit: float = 3600, **env: str):
    """The job as CI runs it: the stack chosen by COMPOSE_FILE and COMPOSE_PROJECT_NAME."""
    environ = {
        **s.env,
        "COMPOSE_FILE": ":".join([TEST_FILES, *files]),
        "COMPOSE_PROJECT_NAME": s.project,
        **env,
    }
    t0 = time.monotonic()
    r = subprocess.run([*COMMAND, *args], cwd=ROOT, env=environ, capture_output=True, text=True,
                       timeout=limit, stdin=subprocess.DEVNULL)  # fmt: skip
    secs = time.monotonic() - t0
    out = r.stdout + r.stderr
    print(f"\n$ {' '.join(COMMAND + list(args))}  -> exit {r.returncode} in {secs:.0f} s")
    print("\n".join(ln for ln in out.splitlines() if ln.startswith("ci_job:")))
    return r.returncode, out, secs


def left_behind(s) -> tuple[list[str], list[str]]:
    """(containers, volumes) of the project after a job."""
    label = f"label=com.docker.compose.project={s.project}"
    c = subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True)
    v = subprocess.run(["docker", "volume", "ls", "-q", "--filter", label], capture_output=True,
                       text=True)  # fmt: skip
    return c.stdout.split(), v.stdout.split()


def logs_of(out: str, service: str) -> str:
    m = re.search(rf"----- {service}: last \d+ log lines -----\n(.*?)----- end of {service} -----",
                  out, re.S)  # fmt: skip
    return m.group(1) if m else ""


@pytest.mark.native  # docker compose config
def test_setup_errors_name_the_setting_and_the_fix(tmp_path):
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI (compose resolves the stack)")
    env = {**os.environ, "COMPOSE_FILE": CPU_FILES, "API_KEY_FILE": str(tmp_path / "nokey"),
           "COMPOSE_ENV_FILES": os.devnull}  # fmt: skip
    r = subprocess.run(COMMAND, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert (
        f"cannot start: secret `api_key`: {tmp_path / 'nokey'} (API_KEY_FILE) is missing; run "
        "`python3 -m scripts.init_secrets` to write it, or set API_KEY_FILE to your own file"
    ) in r.stdout, r.stdout
    r = subprocess.run([*COMMAND, "--timeout", "60"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "--timeout 60 is too short: at least" in r.stderr, r.stderr
    as_written = compose.Compose(["compose.yaml"]).config(interpolate=False)
    assert compose.secret_settings(as_written) == {
        "api_key": "API_KEY_FILE",
        "grafana_admin_password": "GRAFANA_ADMIN_PASSWORD_FILE",
    }


@pytest.mark.stack
def test_hub_wrong_hash_fails_with_the_download_logs(stack):
    """Fresh volumes and a hub that lies about every sha256: download fails, the job says the
    stack never got to smoke, prints download's logs and exits 1; vllm never started."""
    stack.compose("down", "-v", "-t", "10", timeout=300)
    code, out, _ = run_job(stack, "--no-build", HUB_FAULT_ARGS="--wrong-sha256")
    assert code == 1, out[-4000:]
    assert "FAIL: the stack did not get to smoke" in out
    download = logs_of(out, "download")
    assert "integrity check failed" in download, out[-4000:]
    assert re.search(r"^  download\s+exited 2$", out, re.M), out[-3000:]
    assert re.search(r"^  vllm\s+created$", out, re.M), out[-3000:]
    assert left_behind(stack)[0] == [], "containers left after the job"


@pytest.mark.stack
def test_timeout_ends_a_hung_stack(stack):
    """A hub that sends 2 kB/s: download hangs for hours. The job ends at --timeout with exit
    124, a message that says so, and download's logs; the stack is torn down."""
    timeout = ci_job.TEARDOWN_S + 30
    slow = {"HUB_FAULT_ARGS": "--bytes-per-second=2000"}
    code, out, secs = run_job(stack, "--no-build", "--timeout", str(timeout), limit=timeout + 240,
                              **slow)  # fmt: skip
    assert code == 124, out[-4000:]
    assert f"TIMEOUT: --timeout {timeout} s ran out during `up: download, vllm, gateway`" in out
    assert "raise --timeout if it was only slow" in out
    assert "files to fetch" in logs_of(out, "download"), out[-4000:]
    assert left_behind(stack)[0] == [], "containers left after the job"
    print(f"hung stack: ended with 124 after {secs:.0f} s (--timeout {timeout})")


@pytest.mark.stack
def test_readme_command_passes_and_keeps_the_volumes(stack, tmp_path):
    """The README's command as it is (it builds, hitting the cache): download completes, smoke
    passes, exit 0; afterwards no container is left and the models and cache volumes are."""
    logs = tmp_path / "logs"
    code, out, secs = run_job(stack, "--logs-dir", str(logs))
    assert code == 0, out[-6000:]
    assert re.search(r"PASS: smoke exited 0 \(\d+ s: up \d+ s, smoke \d+ s\)", out), out[-3000:]
    assert_printed("ci_job: ", out)  # the README's success lines are the job's last lines
    smoke = (logs / "smoke.log").read_text()
    assert_smoke_passed(smoke)
    assert re.search(r"files fetched, \d+ verified", (logs / "download.log").read_text())
    assert {"hub", "download", "vllm", "gateway", "smoke"} <= {p.stem for p in logs.glob("*.log")}
    containers, volumes = left_behind(stack)
    assert containers == [], "containers left after the job"
    assert {f"{stack.project}_models", f"{stack.project}_cache"} <= set(volumes), volumes
    states = json.loads((logs / "ps.json").read_text())
    assert states["smoke"]["ExitCode"] == 0 and states["vllm"]["Health"] == "healthy"
    m = re.search(r"building (\S+) \((\d+) s\).*?starting the stack: `docker compose up -d` "
                  r"\((\d+) s\)", out, re.S)  # fmt: skip
    print(f"README command: exit 0 in {secs:.0f} s (build of {m.group(1)}: "
          f"{int(m.group(3)) - int(m.group(2))} s)")  # fmt: skip


@pytest.mark.stack
def test_wrong_key_in_smoke_fails_with_smokes_exit_and_logs(stack, tmp_path):
    """The smoke container gets a key the gateway does not know: smoke fails, the job exits
    with smoke's own status and prints smoke's logs. The download of the previous job was kept
    (the volume survived its teardown): nothing is fetched again."""
    wrong = tmp_path / "wrong_key"
    wrong.write_text("not-the-key-" + "x" * 32 + "\n")
    wrong.chmod(0o644)
    override = tmp_path / "wrong-key.yaml"
    override.write_text(
        "services:\n  smoke:\n    secrets: !override\n"
        "      - {source: wrong_key, target: api_key}\n"
        f"secrets:\n  wrong_key:\n    file: {wrong}\n"
    )
    logs = tmp_path / "logs"
    code, out, secs = run_job(stack, "--no-build", "--logs-dir", str(logs), files=(str(override),))
    smoke = logs_of(out, "smoke")
    exited = json.loads((logs / "ps.json").read_text())["smoke"]["ExitCode"]
    assert code == exited != 0, out[-4000:]
    assert f"FAIL: smoke exited {code}" in out
    assert "401" in smoke, smoke[-3000:]
    assert "nothing to download" in (logs / "download.log").read_text()
    assert left_behind(stack)[0] == [], "containers left after the job"
    print(f"wrong key in smoke: exit {code} in {secs:.0f} s; smoke said: "
          f"{[ln for ln in smoke.splitlines() if 'FAIL' in ln or '401' in ln][:2]}")  # fmt: skip
