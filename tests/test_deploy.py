"""The deploy recipes checked by the real tools: the GPU-runner workflow (actionlint), the cloud VM
user-data (Debian's `cloud-init schema`, and its write_files + runcmd run by real cloud-init and
bash in a Debian container, with deploy/host/bootstrap.sh's steps that need no GPU), the systemd
unit (`systemd-analyze verify`), the SkyPilot task (SkyPilot's own loader). Each also with a bad
value, which must give a clear error.

actionlint and skypilot live in a venv of their own (deploy/check-tools.txt; tests/run makes it
and exports QVS_DEPLOY_TOOLS): skypilot pins click and uvicorn below what vLLM's server uses.
    python -m pytest tests/test_deploy.py -q -s
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "gpu-smoke.yml"
USER_DATA = ROOT / "deploy" / "cloud-init" / "user-data.yaml"
UNIT = ROOT / "deploy" / "systemd" / "qwen3-vllm-stack.service"
BOOTSTRAP = ROOT / "deploy" / "host" / "bootstrap.sh"
SKY_TASK = ROOT / "deploy" / "skypilot" / "task.yaml"
CI_COMMAND = "python3 -m scripts.ci_job"
BASE_IMAGE = "qwen3-vllm-stack/debian-base:bookworm"


def tool(name: str) -> str:
    """A checking tool: from the deploy-tools venv, else PATH. Missing: a failure in CI, else a
    skip that says how to get it."""
    venv = os.environ.get("QVS_DEPLOY_TOOLS")
    found = (Path(venv) / "bin" / name) if venv else None
    path = str(found) if found and found.exists() else shutil.which(name)
    if path:
        return path
    why = f"{name} missing: `bash tests/run` installs it (deploy/check-tools.txt, apt)"
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, **kw)


def broken(tmp_path: Path, src: Path, old: str, new: str, name: str | None = None) -> Path:
    text = src.read_text()
    assert old in text, f"{old!r} not in {src.name}"
    out = tmp_path / (name or src.name)
    out.write_text(text.replace(old, new, 1))
    return out


# --- the GPU runner workflow ----------------------------------------------------------------------


@pytest.mark.native  # actionlint
def test_workflow_passes_actionlint_and_a_broken_one_does_not(tmp_path):
    actionlint = tool("actionlint")
    r = run([actionlint, "-no-color", str(WORKFLOW)])
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    version = run([actionlint, "-version"]).stdout.splitlines()[0]
    print(f"\nactionlint {version}: {WORKFLOW.relative_to(ROOT)} clean")
    cases = {
        "label": (
            "fromJSON(needs.settings.outputs.labels)",
            "fromJSON(needs.settings.outputs.label)",
            'property "label" is not defined in object type {labels: string}',
        ),
        "runner": (
            "runs-on: ${{ fromJSON(needs.settings.outputs.labels) }}",
            "runs-on: [self-hosted, gpux]",
            'label "gpux" is unknown',
        ),
        "permissions": ("contents: read", "contents: reed", '"reed" is invalid'),
    }
    for name, (old, new, message) in cases.items():
        bad = broken(tmp_path, WORKFLOW, old, new, f"{name}.yml")
        r = run([actionlint, "-no-color", str(bad)])
        assert r.returncode == 1 and message in r.stdout, (name, r.stdout + r.stderr)


@pytest.mark.unit
def test_workflow_shape():
    """What the issue asks of the job, read from the workflow: minimal permissions, one job at
    a time, the runner labels from the checked setting, the README's command, logs on failure,
    volumes kept (a fixed project name)."""
    wf = yaml.safe_load(WORKFLOW.read_text())
    assert wf["permissions"] == {"contents": "read"}
    assert wf["concurrency"]["cancel-in-progress"] is False
    settings, smoke = wf["jobs"]["settings"], wf["jobs"]["smoke"]
    assert all("permissions" not in job for job in wf["jobs"].values())
    label_step = next(s for s in settings["steps"] if s.get("id") == "labels")
    assert label_step["env"] == {"GPU_RUNNER_LABELS": "${{ vars.GPU_RUNNER_LABELS }}"}
    assert label_step["run"].startswith(f'{CI_COMMAND} --runner-labels "$GPU_RUNNER_LABELS"')
    assert (
        smoke["needs"] == "settings"
        and "head.repo.full_name == github.repository" in settings["if"]
    )
    assert smoke["runs-on"] == "${{ fromJSON(needs.settings.outputs.labels) }}"
    assert smoke["env"]["COMPOSE_PROJECT_NAME"] == "qwen3-vllm-stack"
    runs = [s.get("run", "") for s in smoke["steps"]]
    job = [r for r in runs if r.startswith(CI_COMMAND)]
    assert job == [f'{CI_COMMAND} --timeout "$QVS_CI_TIMEOUT" --logs-dir "$RUNNER_TEMP/qvs-logs"']
    upload = next(s for s in smoke["steps"] if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "failure() || cancelled()"
    assert upload["with"]["path"] == "${{ runner.temp }}/qvs-logs/"
    for s in [*settings["steps"], *smoke["steps"]]:  # actions pinned by commit
        assert "uses" not in s or re.fullmatch(r"[\w-]+/[\w-]+@[0-9a-f]{40}", s["uses"]), s
    readme = (ROOT / "README.md").read_text()
    assert f"\n{CI_COMMAND}\n" in readme, "the README's CI quickstart gives another command"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("gpu", "GPU_RUNNER_LABELS='gpu' is not a JSON list"),
        ("[]", "GPU_RUNNER_LABELS='[]' is not a list of labels"),
        ('["gpu"]', "GPU_RUNNER_LABELS='[\"gpu\"]' lacks self-hosted"),
        ('["self-hosted", "ubuntu-latest"]', "names GitHub's hosted runner ubuntu-latest"),
        ('["self-hosted", " gpu"]', "every label must be a non-empty string"),
    ],
)
def test_a_wrong_runner_label_setting_stops_with_the_fix(value, message):
    r = run([*CI_COMMAND.split(), "--runner-labels", value])
    assert r.returncode == 2 and r.stdout == "", r.stdout
    assert r.stderr.startswith("::error title=GPU_RUNNER_LABELS::") and message in r.stderr
    assert "set the repository variable GPU_RUNNER_LABELS" in r.stderr


@pytest.mark.unit
def test_runner_labels_setting_default_and_own():
    r = run([*CI_COMMAND.split(), "--runner-labels", ""])
    assert r.returncode == 0
    assert r.stdout == 'labels=["self-hosted", "linux", "x64", "gpu"]\n'
    r = run([*CI_COMMAND.split(), "--runner-labels", '["self-hosted","a100"]'])
    assert r.stdout == 'labels=["self-hosted", "a100"]\n'


# --- the cloud VM: user-data, bootstrap, unit -----------------------------------------------------


@pytest.mark.native  # cloud-init schema
def test_user_data_passes_cloud_init_schema_and_bad_values_do_not(tmp_path):
    cloud_init = tool("cloud-init")
    r = run([cloud_init, "schema", "--config-file", str(USER_DATA)])
    assert r.returncode == 0 and "Valid cloud-config" in r.stdout, r.stdout + r.stderr
    version = run([cloud_init, "--version"])
    print(f"\n{(version.stdout + version.stderr).strip()}: {r.stdout.strip()}")
    cases = [
        ("package_update: true", "package_update: sure", "package_update: 'sure' is not of type"),
        ('permissions: "0644"   #', "permissions: 0644   #", "permissions: 420 is not of type"),
        ("#cloud-config\n", "", 'needs to begin with "#cloud-config"'),
    ]
    for i, (old, new, message) in enumerate(cases):
        bad = broken(tmp_path, USER_DATA, old, new, f"bad{i}.yaml")
        r = run([cloud_init, "schema", "--config-file", str(bad)])
        assert r.returncode == 1 and message in r.stdout + r.stderr, (old, r.stdout + r.stderr)


def runcmd_script() -> str:
    (cmd,) = yaml.safe_load(USER_DATA.read_text())["runcmd"]
    assert cmd[:2] == ["bash", "-c"]
    return cmd[2]


@pytest.mark.native  # shellcheck
def test_shell_in_the_recipes_passes_shellcheck(tmp_path):
    shellcheck = tool("shellcheck")
    script = tmp_path / "runcmd.sh"
    script.write_text("#!/usr/bin/env bash\n" + runcmd_script())
    sky = yaml.safe_load(SKY_TASK.read_text())
    files = [script]
    for part in ("setup", "run"):
        (tmp_path / f"sky-{part}.sh").write_text("#!/usr/bin/env bash\n" + sky[part])
        files.append(tmp_path / f"sky-{part}.sh")
    r = run([shellcheck, str(BOOTSTRAP), *map(str, files)])
    assert r.returncode == 0, r.stdout + r.stderr


def grace_chain(services: dict) -> tuple[float, list[str]]:
    """The longest sum of stop grace periods along depends_on (compose stops a service's
    dependents first, then the service)."""

    def secs(svc):
        m = re.fullmatch(r"(?:(\d+)m)?(?:([\d.]+)s)?", svc.get("stop_grace_period") or "10s")
        return int(m.group(1) or 0) * 60 + float(m.group(2) or 0)

    def chain(name):
        below = [chain(d) for d in (services[name].get("depends_on") or {})]
        best = max(below, default=(0.0, []))
        return secs(services[name]) + best[0], [name, *best[1]]

    return max(chain(n) for n in services)


@pytest.mark.native  # systemd-analyze verify
def test_unit_passes_systemd_analyze_verify_and_stops_within_the_grace_periods(tmp_path):
    analyze = tool("systemd-analyze")
    r = run([analyze, "verify", str(UNIT)])
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    cases = [
        ("TimeoutStopSec=", "TimeoutStopSecs=", "Unknown key 'TimeoutStopSecs'"),
        ("WorkingDirectory=/opt", "WorkingDirectory=opt", "path is not absolute"),
        ("ExecStart=docker ", "ExecStart=dockr ", "Command dockr is not executable"),
    ]
    for old, new, message in cases:
        bad = broken(tmp_path, UNIT, old, new)
        r = run([analyze, "verify", str(bad)])
        assert message in r.stdout + r.stderr, (old, r.stdout + r.stderr)
    # every service of compose.yaml (monitoring too) stops inside TimeoutStopSec
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI to resolve compose.yaml")
    env = {**os.environ, "COMPOSE_PROFILES": "monitoring", "COMPOSE_ENV_FILES": os.devnull}
    cfg = run(["docker", "compose", "-f", "compose.yaml", "config", "--format", "json"], env=env)
    assert cfg.returncode == 0, cfg.stderr
    longest, names = grace_chain(json.loads(cfg.stdout)["services"])
    stop = int(re.search(r"^TimeoutStopSec=(\d+)$", UNIT.read_text(), re.M).group(1))
    assert stop > longest, f"TimeoutStopSec={stop} <= {longest} s ({' -> '.join(names)})"
    print(f"\nunit: TimeoutStopSec={stop} s > the longest stop chain {longest:.0f} s "
          f"({' -> '.join(names)})")  # fmt: skip


@pytest.mark.unit
def test_unit_and_bootstrap_agree_on_paths_and_settings():
    unit, boot = UNIT.read_text(), BOOTSTRAP.read_text()
    etc = re.search(r"^QVS_ETC=(\S+)", boot, re.M).group(1)
    workdir = re.search(r"^QVS_DIR=(\S+)", boot, re.M).group(1)
    assert f"WorkingDirectory={workdir}\n" in unit
    assert f"EnvironmentFile=-{etc}/stack.env\n" in unit
    env = dict(re.findall(r"^Environment=(\w+)=(\S+)$", unit, re.M))
    exported = re.search(r"stack_env\(\) \{\n  export (.*?)\n  \[\[", boot, re.S).group(1)
    exported = dict(re.findall(r"(\w+)=(\S+)", exported.replace("$QVS_ETC", etc)))
    assert env == exported, (env, exported)
    assert set(env) - {"COMPOSE_PROJECT_NAME"} <= set(re.findall(r"^(\w+)=", (
        ROOT / ".env.example").read_text(), re.M))  # fmt: skip


# --- SkyPilot -------------------------------------------------------------------------------------

SKY_LOAD = """
import json, sys
import sky
from sky.utils import yaml_utils
cfg = yaml_utils.read_yaml(sys.argv[1])
overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
try:
    t = sky.Task.from_yaml_config(cfg, secrets_overrides=overrides)
except Exception as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
    sys.exit(1)
print(json.dumps({
    "name": t.name, "envs": t.envs, "setup": t.setup, "run": t.run, "workdir": t.workdir,
    "secrets": sorted(t.secrets), "managed": [r.name for r in t._managed_secret_refs],
    "accelerators": sorted(a for r in t.resources for a in (r.accelerators or {})),
    "disk": sorted({r.disk_size for r in t.resources}),
}))
"""


def sky_load(path: Path, tmp_path: Path, overrides=None) -> tuple[int, dict]:
    python = tool("python")  # the deploy-tools venv's python has skypilot
    if not os.environ.get("QVS_DEPLOY_TOOLS") and run([python, "-c", "import sky"]).returncode:
        pytest.skip("skypilot missing: `bash tests/run` installs it (deploy/check-tools.txt)")
    args = [python, "-c", SKY_LOAD, str(path)] + ([json.dumps(overrides)] if overrides else [])
    r = run(args, env={**os.environ, "HOME": str(tmp_path)})  # SkyPilot writes ~/.sky
    try:
        return r.returncode, json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(r.stdout + r.stderr) from None


@pytest.mark.native  # skypilot's loader, its own venv
def test_skypilot_loads_the_task_and_bad_values_stop_it(tmp_path):
    rc, task = sky_load(SKY_TASK, tmp_path)
    assert rc == 0, task
    assert task["name"] == "qwen3-vllm-stack" and task["workdir"] == "."
    assert task["managed"] == ["QVS_API_KEY"] and task["secrets"] == []  # a secret, never an env
    settings = set(re.findall(r"^(\w+)=", (ROOT / ".env.example").read_text(), re.M))
    assert set(task["envs"]) <= settings, set(task["envs"]) - settings
    assert "deploy/host/bootstrap.sh check docker toolkit runtime secrets image" in task["setup"]
    assert "docker compose up" in task["run"]
    assert min(task["disk"]) >= 100 and "L4" in task["accelerators"]
    rc, given = sky_load(SKY_TASK, tmp_path, overrides=[["QVS_API_KEY", "k" * 32]])
    assert rc == 0 and given["secrets"] == ["QVS_API_KEY"] and given["managed"] == []
    print(f"\nskypilot loads {SKY_TASK.relative_to(ROOT)}: {task['accelerators']}, disk "
          f"{task['disk']} GB, envs {sorted(task['envs'])}, secret {task['managed']}")  # fmt: skip
    cases = [
        ("TRACK: cu124", "TRACK: null", "Environment variable 'TRACK' is None. Please set a value"),
        ("setup: |", "setups: |", "Invalid task YAML: Instead of 'setups', did you mean 'setup'?"),
        ("disk_size: 200", "disk_size: lots", "Invalid resources YAML: 'lots' does not match"),
    ]
    for i, (old, new, message) in enumerate(cases):
        rc, out = sky_load(broken(tmp_path, SKY_TASK, old, new, f"bad{i}.yaml"), tmp_path)
        assert rc == 1 and message in out["message"], (old, out)


# --- the user-data and the bootstrap, run for real in a Debian container --------------------------


class Box:
    """A Debian 12 container that plays the cloud VM (no GPU, no systemd running)."""

    def __init__(self, name: str):
        self.name = name

    def sh(self, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run(["docker", "exec", self.name, "bash", "-c", script], timeout=timeout)

    def argv(self, argv: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
        return run(["docker", "exec", self.name, *argv], timeout=timeout)


def render(tmp_path: Path, name: str, key: str, commit: str, steps: str) -> str:
    """The user-data with its CHANGE-MEs filled as a user would; returns its path in the box."""
    text = USER_DATA.read_text()
    for old, new in [
        ("QVS_REPO=https://github.com/CHANGE-ME/qwen3-vllm-stack.git",
         "QVS_REPO=file:///srv/bundle.git"),
        ("QVS_REF=CHANGE-ME", "QVS_REF=v-test"),
        ("QVS_COMMIT=CHANGE-ME", f"QVS_COMMIT={commit}"),
        ('QVS_STEPS=""\n', f'QVS_STEPS="{steps}"\n'),
        ("      CHANGE-ME\n", f"      {key}\n"),
    ]:  # fmt: skip
        assert old in text, old
        text = text.replace(old, new)
    (tmp_path / "ud" / name).write_text(text)
    return f"/ud/{name}"


def provision(box: Box, user_data: str) -> subprocess.CompletedProcess:
    """What cloud-init does at first boot, minus the package installs done once before: the
    real write_files module, then runcmd's command as cloud-init runs it."""
    box.sh("rm -rf /etc/qwen3-vllm-stack /opt/qwen3-vllm-stack "
           "/etc/systemd/system/qwen3-vllm-stack.service "
           "/etc/systemd/system/multi-user.target.wants/qwen3-vllm-stack.service")  # fmt: skip
    r = box.argv(["cloud-init", "--file", user_data, "single", "--name", "write_files",
                  "--frequency", "always"])  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return rerun(box)


def rerun(box: Box) -> subprocess.CompletedProcess:
    return box.argv(["bash", "-c", runcmd_script()])


def sums(box: Box, *paths: str) -> str:
    return box.sh(f"sha256sum {' '.join(paths)}").stdout


@pytest.mark.stack
def test_user_data_and_bootstrap_in_a_debian_container(tmp_path):
    """cloud-init's own write_files and the user-data's runcmd in a Debian 12 container (our
    base image, as a GPU image's OS minus the GPU): the bundle is checked out at the pinned
    commit, bootstrap.sh's steps that need no GPU run (check, secrets, service, doctor), a
    second run changes nothing; a left placeholder key or a wrong pin stop with a clear
    message; the docker step installs from Docker's repository where it is reachable and
    names the mirror setting where it is not."""
    if shutil.which("docker") is None or run(["docker", "info"], timeout=60).returncode:
        pytest.skip("no Docker engine")
    r = run(["bash", "docker/build-base.sh"], timeout=900)  # skipped when the image exists
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    bare = tmp_path / "bundle.git"
    assert run(["git", "clone", "-q", "--bare", "--no-local", str(ROOT), str(bare)]).returncode == 0
    commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
    assert run(["git", "-C", str(bare), "tag", "v-test", commit]).returncode == 0
    (tmp_path / "ud").mkdir()
    name = f"qvs-deploy-test-{secrets.token_hex(4)}"
    started = run(["docker", "run", "-d", "--rm", "--name", name,
                   "-v", f"{bare}:/srv/bundle.git:ro", "-v", f"{tmp_path / 'ud'}:/ud:ro",
                   BASE_IMAGE, "sleep", "infinity"])  # fmt: skip
    assert started.returncode == 0, started.stderr
    box = Box(name)
    try:
        t0 = time.monotonic()
        packages = yaml.safe_load(USER_DATA.read_text())["packages"]
        r = box.sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                   f"--no-install-recommends cloud-init systemd {' '.join(packages)} >/dev/null",
                   timeout=900)  # fmt: skip
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        print(f"\ncontainer: cloud-init, systemd and the user-data's packages {packages} "
              f"installed in {time.monotonic() - t0:.0f} s")  # fmt: skip
        key = secrets.token_hex(24)
        steps = "check secrets service doctor"

        # a placeholder left in the key: stops before anything is installed
        r = provision(box, render(tmp_path, "placeholder.yaml", "CHANGE-ME", commit, steps))
        assert r.returncode == 1, r.stdout + r.stderr
        assert ("check: /etc/qwen3-vllm-stack/secrets/api_key still holds the placeholder "
                "CHANGE-ME: put your API key there") in r.stderr, r.stderr  # fmt: skip
        # a tag that is not the pinned commit: refused
        r = provision(box, render(tmp_path, "pin.yaml", key, "0" * 40, steps))
        assert r.returncode == 1 and f"v-test of file:///srv/bundle.git is {commit}, not the "\
            f"pinned {'0' * 40}: refusing it" in r.stderr, r.stderr  # fmt: skip

        # the real thing
        t0 = time.monotonic()
        r = provision(box, render(tmp_path, "good.yaml", key, commit, steps))
        first = time.monotonic() - t0
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
        out = r.stdout
        assert box.sh("git -C /opt/qwen3-vllm-stack rev-parse HEAD").stdout.strip() == commit
        assert "check: Debian GNU/Linux 12 (bookworm)" in out
        assert box.sh("cat /etc/qwen3-vllm-stack/secrets/api_key").stdout == key + "\n"
        modes = box.sh("stat -c '%a %n' /etc/qwen3-vllm-stack/secrets "
                       "/etc/qwen3-vllm-stack/secrets/api_key "
                       "/etc/qwen3-vllm-stack/secrets/grafana_admin_password "
                       "/etc/qwen3-vllm-stack/secrets/tls").stdout.split("\n")  # fmt: skip
        assert [m.split()[0] for m in modes if m] == ["700", "644", "644", "755"], modes
        unit = "/etc/systemd/system/qwen3-vllm-stack.service"
        assert box.sh(f"cat {unit}").stdout == UNIT.read_text()
        wants = box.sh("readlink /etc/systemd/system/multi-user.target.wants/"
                       "qwen3-vllm-stack.service").stdout.strip()  # fmt: skip
        assert wants == unit, wants
        assert "service: systemd is not running here" in out
        assert re.search(r"\bdocker\b.*FAIL", out, re.I) and "doctor found problems" in out, out
        before = sums(box, "/etc/qwen3-vllm-stack/secrets/api_key",
                      "/etc/qwen3-vllm-stack/secrets/grafana_admin_password", unit)  # fmt: skip

        # again, as a re-run of the runcmd would: nothing changes
        r = rerun(box)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "already exists, kept" in r.stdout and f"{unit} up to date already" in r.stdout
        after = sums(box, "/etc/qwen3-vllm-stack/secrets/api_key",
                     "/etc/qwen3-vllm-stack/secrets/grafana_admin_password", unit)  # fmt: skip
        assert after == before
        print(f"user-data in the container: first run {first:.0f} s; steps {steps}; "
              "a second run changed nothing")  # fmt: skip

        # the docker step: Docker's repository, if this machine reaches it
        r = box.argv(["/opt/qwen3-vllm-stack/deploy/host/bootstrap.sh", "docker"], timeout=900)
        if r.returncode == 0:
            assert "docker: installed Docker with Compose" in r.stdout, r.stdout[-2000:]
            print("docker step: installed from Docker's repository")
        else:
            want = ("docker: cannot download https://download.docker.com/linux/debian/gpg: check "
                    "the network, or point DOCKER_APT_URL at a mirror")  # fmt: skip
            assert want in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]
            print(f"docker step: Docker's repository is out of reach here: {want!r}")
    finally:
        run(["docker", "rm", "-f", name], timeout=60)


@pytest.mark.native  # bash deploy/host/bootstrap.sh
def test_bootstrap_refuses_without_a_key_and_unknown_steps():
    """No key at all (SkyPilot without --secret): the check step names both ways to give one."""
    env = {k: v for k, v in os.environ.items() if k != "QVS_API_KEY"}
    r = run(["bash", str(BOOTSTRAP), "nonsense"], env=env)
    assert r.returncode == 2 and "unknown step 'nonsense' (steps: check docker" in r.stderr
    if os.geteuid() != 0 or Path("/etc/qwen3-vllm-stack").exists():
        pytest.skip("needs root and no /etc/qwen3-vllm-stack (the container test covers it)")
    os_id = dict(
        ln.split("=", 1) for ln in Path("/etc/os-release").read_text().splitlines() if "=" in ln
    )
    if f"{os_id.get('ID')}-{os_id.get('VERSION_ID', '').strip(chr(34))}" not in (
        "ubuntu-22.04", "ubuntu-24.04", "debian-12"):  # fmt: skip
        pytest.skip("not a supported OS for the check step")
    r = run(["bash", str(BOOTSTRAP), "check"], env=env)
    assert r.returncode == 1, r.stdout + r.stderr
    want = ("check: no API key: set QVS_API_KEY (SkyPilot: --secret QVS_API_KEY=...) or write "
            "/etc/qwen3-vllm-stack/secrets/api_key (cloud-init: write_files)")  # fmt: skip
    assert want in r.stderr, r.stderr
    r = run(["bash", str(BOOTSTRAP), "check"], env={**env, "QVS_API_KEY": "short"})
    assert r.returncode == 1 and "QVS_API_KEY must be at least 16 characters" in r.stderr
    print("\nbootstrap.sh check without a key: exit 1 with both ways to give one")
