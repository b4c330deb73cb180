"""A newcomer's first hour on a GPU-less host (issue 23): a fresh clone, `.env` copied from
`.env.example`, each host command the README names run once with the host's python3. Each
exits 0 where it can work here, or stops with exit 2 and one line that names the setting or
tool at fault and the fix; none prints a traceback. The transcript is printed."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.native  # git clone, docker compose, the host's python3

# (command, expected exit, what its output says): 0 where the command works on this GPU-less
# machine, else the one line a user gets
COMMANDS = [
    ("scripts.init_secrets", 0, "secrets/api_key"),
    ("scripts.settings", 0, "MAX_MODEL_LEN"),
    ("scripts.settings --json", 0, '"source"'),
    ("scripts.serve --print", 0, "vllm serve /models/Qwen/Qwen3-8B"),
    ("scripts.doctor", 1, "doctor: "),  # this host has no GPU: its FAIL rows name the fixes
    ("scripts.replicas --check", 2, "cannot list this host's GPUs"),
    ("scripts.k8s", 0, "kind: StatefulSet"),
    ("scripts.engine_limits", 0, "nofile"),
]


def test_each_host_command_works_or_names_the_fix(tmp_path):
    python3 = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")
    clone = tmp_path / "qwen3-vllm-stack"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    (clone / ".env").write_text((ROOT / ".env.example").read_text())
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "PATH", "USER")}
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if "qwen3-vllm-stack" not in p)
    transcript, wrong = [], []
    for cmd, want, says in COMMANDS:
        r = subprocess.run([python3, "-m", *cmd.split()], cwd=clone, env=env, text=True,
                           capture_output=True, timeout=180, stdin=subprocess.DEVNULL)  # fmt: skip
        out = r.stdout + r.stderr
        last = [ln for ln in out.splitlines() if ln.strip()][-1:] or [""]
        transcript.append(f"$ python3 -m {cmd}  -> exit {r.returncode}: {last[0][:110]}")
        if r.returncode != want or says not in out or "Traceback" in out:
            wrong.append(f"{cmd}: exit {r.returncode} (want {want}), {says!r}?\n{out[-1500:]}")
        if r.returncode == 2 and (r.stderr.count("\n") != 1 or "fix" not in r.stderr.lower()):
            wrong.append(f"{cmd}: not one line naming the fix:\n{r.stderr}")
    print("\n" + "\n".join(transcript))
    assert not wrong, "\n".join(wrong)
