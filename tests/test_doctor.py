"""The host preflight (`python3 -m scripts.doctor`) and the checks it shares with the container
start (scripts/checks/), on recorded hosts (tests/fixtures/hosts/, README.txt there says
which command wrote each file) and on hosts derived from them by editing single fields."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bench.standins import QWEN3_8B as QWEN3_8B_CONFIG
from scripts import doctor
from scripts.checks import container, memory
from scripts.checks import driver as driver_checks
from scripts.checks import gpus as gpu_checks
from scripts.checks.memory import GIB
from scripts.checks.row import FAIL, OK, WARN
from scripts.doctor import host, network, report
from scripts.stack import compose, manifest, model, settings
from scripts.stack.settings import SettingsError, load
from tests.conftest import ROOT
from tests.fixtures.readme import assert_printed

HOSTS = ROOT / "tests" / "fixtures" / "hosts"
H100_RECORDED = HOSTS / "h100" / "nvidia-smi.csv"
# Until the lead records the lent H100 (tests/fixtures/hosts/h100/), the derived GPU hosts start
# from the facts expected there, in nvidia-smi's own csv,noheader,nounits shape.
H100_EXPECTED = "0, NVIDIA H100 80GB HBM3, 81559, 0, 580.159.04\n"
BENCH = ROOT / "bench" / "results" / "2026-11-24-h100"


def h100_csv() -> str:
    return H100_RECORDED.read_text() if H100_RECORDED.exists() else H100_EXPECTED


def gpu_csv(n: int = 1, **fields: object) -> str:
    """The H100's nvidia-smi line with fields replaced (name, total, used, driver), n GPUs."""
    first = h100_csv().splitlines()[0].split(", ")
    keys = {"name": 1, "total": 2, "used": 3, "driver": 4}
    for k, v in fields.items():
        first[keys[k]] = str(v)
    return "".join(", ".join([str(i), *first[1:]]) + "\n" for i in range(n))


class RecordedHost(host.Host):
    """A host replayed from tests/fixtures/hosts/NAME/: command answers from the recorded files
    (FILE, FILE.rc, FILE.err), single answers replaceable with set()/edit_json(). Ports are this
    machine's real ones; files are read for real only under `real` (a test's tmp_path).
    `docker compose ... config` is Compose itself (it needs no engine), on the test's env file
    and environment, unless the recorded host has no Compose."""

    COMMANDS = {
        ("docker", "version"): "docker-version.json",
        ("docker", "info"): "docker-info.json",
        ("docker", "compose"): "docker-compose-version.txt",
        ("docker", "buildx"): "docker-buildx-version.txt",
        ("docker", "ps"): "docker-ps.jsonl",
        ("docker", "volume"): "docker-volume-inspect.json",
        ("nvidia-smi",): "nvidia-smi.csv",
    }

    def __init__(self, name="this-machine", *, disk=500e9, online=False, real=None, tools=()):
        self.dir = HOSTS / name
        self.over: dict[str, tuple[int, str, str]] = {}
        self.disk, self.online, self.real, self.tools = disk, online, real, set(tools)
        self.calls: list[list[str]] = []

    def recorded(self, file: str) -> tuple[int, str, str]:
        if file in self.over:
            return self.over[file]
        out, rc, err = (self.dir / f for f in (file, file + ".rc", file + ".err"))
        if not out.exists() and not rc.exists():
            return 127, "", f"{file}: not recorded"
        return (
            int(rc.read_text()) if rc.exists() else 0,
            out.read_text() if out.exists() else "",
            err.read_text() if err.exists() else "",
        )

    def set(self, file: str, out: str, rc: int = 0, err: str = "") -> RecordedHost:
        self.over[file] = (rc, out, err)
        return self

    def edit_json(self, file: str, edit) -> RecordedHost:
        rc, out, err = self.recorded(file)
        data = json.loads(out)
        edit(data)
        return self.set(file, json.dumps(data), rc, err)

    def run(self, argv, timeout=30, *, env=None, cwd=None, stdin=None):
        self.calls.append(list(argv))
        if argv[:2] == ["docker", "compose"] and "config" in argv:
            return host.Host().run(argv, timeout, env=env, cwd=cwd, stdin=stdin)
        key = tuple(argv[:1]) if argv[0] == "nvidia-smi" else tuple(argv[:2])
        if key in self.COMMANDS:
            return self.recorded(self.COMMANDS[key])
        return 1, "", f"{' '.join(argv[:3])}: not recorded"

    def which(self, name):
        if name == "docker":
            return None if self.recorded("docker-version.json")[0] == 127 else "/usr/bin/docker"
        return f"/usr/bin/{name}" if name in self.tools else None

    def disk_free(self, path):
        return int(self.disk)

    def read_text(self, path):
        if path.startswith("/root-only/"):  # a volume Mountpoint this user may not read
            raise PermissionError(path)
        if self.real and Path(path).is_relative_to(self.real):
            return Path(path).read_text()
        raise FileNotFoundError(path)

    def list_dir(self, path):
        if self.real and Path(path).is_relative_to(self.real):
            return sorted(os.listdir(path))
        raise FileNotFoundError(path)

    def http_ok(self, url, timeout=5):
        return (True, "HTTP 200") if self.online else (False, "URLError: recorded host is offline")


BUILDX = "github.com/docker/buildx v0.19.3 48d6a39\n"


def gpu_host(tmp_path, csv: str | None = None, **kw) -> RecordedHost:
    """This machine's Docker with the NVIDIA runtime registered, the H100's nvidia-smi (or csv),
    online: a host on which the stack should start."""
    host = RecordedHost(online=kw.pop("online", True), real=tmp_path, **kw)
    host.edit_json("docker-info.json", lambda d: d["Runtimes"].update(nvidia={"path": "x"}))
    host.set("docker-buildx-version.txt", BUILDX)  # a GPU host with Docker's own packages
    return host.set("nvidia-smi.csv", csv or h100_csv())


def environ(tmp_path, **settings: str) -> dict[str, str]:
    key = tmp_path / "api_key"
    key.write_text("k" * 32)
    return {"API_KEY_FILE": str(key), "HOST_PORT": str(free_port()), **settings}  # settings win


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check(host, tmp_path, env_file_text: str | None = None, **settings: str) -> dict:
    env_file = tmp_path / ".env"
    if env_file_text is not None:
        env_file.write_text(env_file_text)
    rows = doctor.collect(host, environ(tmp_path, **settings), env_file)
    names = [r.check for r in rows]
    assert len(names) == len(set(names)), names
    for r in rows:
        assert r.status in (OK, WARN, FAIL)
        if r.status == FAIL:
            assert r.fix.strip(), f"{r.check} FAILs without a fix: {r}"
    print("\n" + report.table(rows))
    return {r.check: r for r in rows}


def fails(rows: dict) -> set[str]:
    return {name for name, r in rows.items() if r.status == FAIL}


# --- the model's numbers, against its config and vLLM's own logs ------------------------------


@pytest.mark.unit
def test_qwen3_8b_numbers_come_from_its_config():
    shape = model.shape_from_config(QWEN3_8B_CONFIG)
    assert shape == model.QWEN3_8B
    assert 8.18e9 < shape.params() < 8.20e9  # "Qwen3-8B: 8.2B parameters"
    assert round(shape.weight_bytes() / 1e9, 1) == 16.4
    assert shape.kv_bytes_per_token(2) == 144 * 1024
    assert shape.kv_bytes_per_token(1) == 72 * 1024
    # fp8 quantizes the projections only: embedding and LM head stay bf16
    assert 8.7 < shape.weight_bytes("fp8") / GIB < 8.9


def _logged(log: str, pattern: str) -> float:
    m = re.search(pattern, (BENCH / log).read_text())
    assert m, f"{pattern} not in {log}"
    return float(m.group(1).replace(",", ""))


@pytest.mark.unit
@pytest.mark.parametrize(
    "log, profile", [("latency.log.txt", "latency"), ("throughput.log.txt", "throughput")]
)
def test_memory_model_predicts_what_vllm_logged_on_the_h100(log, profile):
    """bench/results/: vLLM 0.26.0 on the H100 at MAX_MODEL_LEN 8192, utilization 0.90."""
    s = load({"SERVE_PROFILE": profile})
    need = memory.model_memory_need(s, model.QWEN3_8B)
    weights = _logged(log, r"Model loading took ([\d.]+) GiB")
    kv_gib = _logged(log, r"Available KV cache memory: ([\d.]+) GiB")
    kv_tokens = _logged(log, r"GPU KV cache size: ([\d,]+) tokens")
    assert abs(need.weights / GIB - weights) / weights < 0.01
    assert abs(need.kv_per_token * kv_tokens / GIB - kv_gib) / kv_gib < 0.01
    total = gpu_checks.parse_gpus(h100_csv())[0].total_mib
    assert abs(need.budget(total, 0.90) / GIB - kv_gib) < 0.5  # GiB, of 54


@pytest.mark.unit
@pytest.mark.parametrize(
    "track, driver, status, fix_names",
    [
        ("cu124", "470.256.02", FAIL, "550.54.14"),
        ("cu124", "535.183.01", WARN, "550.54.14"),
        ("cu124", "550.54.13", WARN, "550.54.14"),
        ("cu124", "550.54.14", OK, ""),
        ("cu124", "580.159.04", OK, ""),
        ("cu130", "570.86.15", FAIL, "TRACK=cu124"),
        ("cu130", "535.183.01", FAIL, "580"),
        ("cu130", "580.65.06", OK, ""),
    ],
)
def test_driver_against_track(track, driver, status, fix_names):
    row = driver_checks.driver_ok(track, driver)
    assert row.status == status, row
    assert fix_names in row.fix
    if track == "cu130" and status == FAIL:
        switch = row.suggest.get("TRACK") == "cu124"
        assert switch == (driver >= "550"), row  # only where the cu124 track would run


@pytest.mark.unit
def test_parse_gpus_keeps_odd_names_and_unknown_memory():
    gpus = gpu_checks.parse_gpus(gpu_csv(2) + "2, NVIDIA A100, PCIe 40GB, [N/A], [N/A], 535.1\n")
    assert [g.index for g in gpus] == [0, 1, 2]
    assert gpus[2].name == "NVIDIA A100, PCIe 40GB" and gpus[2].total_mib is None
    with pytest.raises(ValueError):
        gpu_checks.parse_gpus("NVIDIA-SMI has failed because it couldn't communicate")


@pytest.mark.unit
def test_preflight_setting():
    assert load({}).preflight == 1 and load({"PREFLIGHT": "0"}).preflight == 0
    with pytest.raises(SettingsError, match="PREFLIGHT='yes'"):
        load({"PREFLIGHT": "yes"})


# --- this machine, as recorded ----------------------------------------------------------------


@pytest.mark.unit
def test_this_machine_recorded_cuda(tmp_path):
    rows = check(RecordedHost(real=tmp_path), tmp_path)
    assert rows["BuildKit"].status == FAIL and "classic builder" in rows["BuildKit"].detail
    assert "docker-buildx-plugin" in rows["BuildKit"].fix
    assert rows["NVIDIA runtime"].status == FAIL
    assert "nvidia-ctk runtime configure --runtime=docker" in rows["NVIDIA runtime"].fix
    assert "nvidia-container-toolkit" in rows["NVIDIA runtime"].fix
    assert rows["NVIDIA driver"].status == FAIL and "nvidia-smi" in rows["NVIDIA driver"].detail
    # the fix names only what a user can set, and the CPU base image the override needs
    fix = rows["GPU count"].fix
    assert rows["GPU count"].status == FAIL and "SERVE_DEVICE" not in fix, fix
    assert "docker/build-base.sh" in fix and "COMPOSE_FILE=compose.yaml:compose.cpu.yaml" in fix
    assert "COMPOSE_FILE" in (ROOT / "README.md").read_text()  # a setting the README names
    # Debian's Docker 20.10.24 with the Compose v5 plugin
    assert rows["Docker engine"].status == WARN and "20.10.24" in rows["Docker engine"].detail
    assert rows["Compose plugin"].status == OK
    assert rows["model hub"].status == FAIL and "MODELSCOPE_ENDPOINT" in rows["model hub"].fix


@pytest.mark.unit
def test_this_machine_recorded_cpu(tmp_path):
    # the GPU rows' own fix, followed in .env: COMPOSE_FILE with the CPU override
    rows = check(RecordedHost(real=tmp_path, online=True), tmp_path,
                 "COMPOSE_FILE=compose.yaml:compose.cpu.yaml\n")  # fmt: skip
    # this machine has no buildx: `docker compose up --build` cannot build the Dockerfile here
    # (tests/run builds with docker/build-image.sh, the row's fix)
    assert fails(rows) == {"BuildKit"} and "docker/build-image.sh" in rows["BuildKit"].fix
    for name in ("NVIDIA runtime", "NVIDIA driver", "GPU count", "GPU memory"):
        assert "not needed" in rows[name].detail
    rows = check(RecordedHost(real=tmp_path, online=True), tmp_path, SERVE_DEVICE="cpu")
    assert rows["NVIDIA runtime"].status == OK  # how the tests' environment says it


# --- a GPU host, and bad hosts derived from it ------------------------------------------------


@pytest.mark.unit
def test_buildx_older_than_compose_needs_fails(tmp_path):
    rows = check(gpu_host(tmp_path).set("docker-buildx-version.txt", "github.com/docker/buildx "
                                        "v0.13.1 Debian\n"), tmp_path)  # fmt: skip
    row = rows["BuildKit"]
    assert row.status == FAIL and "0.13.1 is older than 0.17" in row.detail


@pytest.mark.unit
def test_gpu_host_is_ready(tmp_path):
    host = gpu_host(tmp_path)
    rows = check(host, tmp_path)
    assert fails(rows) == set()
    assert rows["GPU memory"].status == OK
    assert rows["NVIDIA driver"].status == OK and "580.159.04" in rows["NVIDIA driver"].detail
    out = tmp_path / "out.json"
    env = environ(tmp_path)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        for k in ("SERVE_DEVICE", "TRACK", "MAX_MODEL_LEN", "SERVE_PROFILE", "COMPOSE_FILE"):
            mp.delenv(k, raising=False)
        rc = run_main(["--json", "--env-file", str(tmp_path / "none")], host, out)
    doc = json.loads(out.read_text())
    assert rc == 0 and doc["exit"] == 0 and doc["suggested_env"] == {}
    assert {r["check"] for r in doc["rows"]} >= {"Docker engine", "GPU memory", "host port"}


def run_main(argv, host, out: Path) -> int:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = doctor.main(argv, host=host)
    out.write_text(buf.getvalue())
    return rc


@pytest.mark.unit
def test_old_driver(tmp_path):
    rows = check(gpu_host(tmp_path, gpu_csv(driver="470.256.02")), tmp_path, TRACK="cu124")
    assert fails(rows) == {"NVIDIA driver"}
    assert "550.54.14" in rows["NVIDIA driver"].fix
    rows = check(gpu_host(tmp_path, gpu_csv(driver="570.86.15")), tmp_path, TRACK="cu130",
                 BASE_IMAGE=settings.TRACK_IMAGES["cu130"])  # fmt: skip
    assert rows["NVIDIA driver"].suggest == driver_checks.cu124_switch()


@pytest.mark.unit
def test_base_image_must_match_track(tmp_path):
    rows = check(gpu_host(tmp_path), tmp_path, TRACK="cu130")  # BASE_IMAGE left at 12.4.1
    assert rows["image track"].status == FAIL
    assert rows["image track"].suggest == {"BASE_IMAGE": settings.TRACK_IMAGES["cu130"]}


def apply(suggested: dict[str, str], settings: dict[str, str]) -> dict[str, str]:
    return {**settings, **suggested}


@pytest.mark.unit
def test_small_cards_in_bf16_get_settings_that_fit(tmp_path):
    # a 16 GB T4: the full 40960 tokens fit only with Qwen's 4-bit AWQ checkpoint
    settings = {"SERVE_PROFILE": "plain", "MAX_MODEL_LEN": "40960"}
    t4 = gpu_csv(name="Tesla T4", total=15360)
    rows = check(gpu_host(tmp_path, t4), tmp_path, **settings)
    mem = rows["GPU memory"]
    assert fails(rows) == {"GPU memory"} and "weights do not fit" in mem.detail
    assert mem.suggest == {"SERVE_PROFILE": "awq"}, mem.suggest
    assert "SERVE_PROFILE=awq in .env" in mem.fix and "Qwen/Qwen3-8B-AWQ" in mem.fix
    fixed = check(gpu_host(tmp_path, t4), tmp_path, **apply(mem.suggest, settings))
    assert fixed["GPU memory"].status != FAIL and "awq weights" in fixed["GPU memory"].detail
    # a 10 GB card: 4-bit weights and a shorter MAX_MODEL_LEN
    card = gpu_csv(name="NVIDIA GeForce RTX 3080", total=10240)
    mem = check(gpu_host(tmp_path, card), tmp_path, **settings)["GPU memory"]
    assert mem.status == FAIL and mem.suggest["SERVE_PROFILE"] == "awq", mem
    length = int(mem.suggest["MAX_MODEL_LEN"])
    assert 1024 <= length < 40960 and length % 1024 == 0
    assert "SERVE_PROFILE=awq" in mem.fix and f"MAX_MODEL_LEN={length}" in mem.fix
    # the suggestion fits, and 1024 tokens more would not
    fixed = check(gpu_host(tmp_path, card), tmp_path, **apply(mem.suggest, settings))
    assert fixed["GPU memory"].status != FAIL
    longer = apply({**mem.suggest, "MAX_MODEL_LEN": str(length + 1024)}, settings)
    assert check(gpu_host(tmp_path, card), tmp_path, **longer)["GPU memory"].status == FAIL


@pytest.mark.unit
@pytest.mark.parametrize(
    "name, total, settings, suggested",
    [  # the smallest change: fp8 KV cache, fp8 weights, 4-bit weights, then a shorter length
        ("NVIDIA GeForce RTX 4060 Ti", 16380, {"SERVE_PROFILE": "plain"}, {"SERVE_PROFILE": "fp8"}),
        ("NVIDIA L4", 23034, {"SERVE_PROFILE": "plain", "MAX_MODEL_LEN": "40960"},
         {"SERVE_PROFILE": "default"}),
    ],
)  # fmt: skip
def test_memory_suggestion_is_the_smallest_change(tmp_path, name, total, settings, suggested):
    rows = check(gpu_host(tmp_path, gpu_csv(name=name, total=total)), tmp_path, **settings)
    assert rows["GPU memory"].status == FAIL
    assert rows["GPU memory"].suggest == suggested
    fixed = check(gpu_host(tmp_path, gpu_csv(name=name, total=total)), tmp_path,
                  **apply(suggested, settings))  # fmt: skip
    assert fixed["GPU memory"].status in (OK, WARN)


@pytest.mark.unit
def test_few_sequences_warn(tmp_path):
    rows = check(gpu_host(tmp_path, gpu_csv(name="NVIDIA L4", total=23034)), tmp_path,
                 MAX_MODEL_LEN="32768")  # fmt: skip
    assert rows["GPU memory"].status == WARN and "MAX_MODEL_LEN=" in rows["GPU memory"].fix


@pytest.mark.unit
def test_other_processes_hold_gpu_memory(tmp_path):
    rows = check(gpu_host(tmp_path, gpu_csv(used=60000)), tmp_path)
    free = rows["GPU free memory"]
    assert free.status == FAIL and "60000 MiB" in free.detail
    util = float(free.suggest["GPU_MEMORY_UTILIZATION"])
    assert 0.05 <= util < 0.9 and f"GPU_MEMORY_UTILIZATION={util:.2f}" in free.fix
    after = check(gpu_host(tmp_path, gpu_csv(used=60000)), tmp_path,
                  GPU_MEMORY_UTILIZATION=f"{util:.2f}")  # fmt: skip
    assert fails(after) == set()
    # an idle card passes even at the highest utilization settings.py allows
    for card in (gpu_csv(), gpu_csv(name="NVIDIA GeForce RTX 4090", total=24564, used=0)):
        gpus = gpu_checks.parse_gpus(card)
        assert memory.check_gpu_free(load({"GPU_MEMORY_UTILIZATION": "0.98"}), gpus).status == OK
    # so much taken that no utilization leaves room for the model: only stopping them helps
    rows = check(gpu_host(tmp_path, gpu_csv(used=72000)), tmp_path)
    assert rows["GPU free memory"].suggest == {} and "stop" in rows["GPU free memory"].fix


@pytest.mark.unit
def test_full_disk(tmp_path):
    rows = check(gpu_host(tmp_path, disk=1e9), tmp_path)
    assert fails(rows) == {"disk"}
    assert "/var/lib/docker" in rows["disk"].detail  # DockerRootDir from the recorded info
    assert "data-root" in rows["disk"].fix and "free 19.0 GB" in rows["disk"].fix


@pytest.mark.unit
def test_port_taken_by_a_process(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        rows = check(gpu_host(tmp_path), tmp_path, HOST_PORT=str(port))
        row = rows["host port"]
        assert fails(rows) == {"host port"}
        assert f"port {port} is in use by" in row.detail
        if Path("/proc/net/tcp").exists():
            assert f"pid {os.getpid()}" in row.detail
        alt = int(row.suggest["HOST_PORT"])
        assert alt != port and f"HOST_PORT={alt}" in row.fix
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", alt))  # the suggested port really is free


# `docker ps --format '{{json .}}'` lines as Docker prints them for a compose container
def ps_line(project: str, service: str, ports: str) -> str:
    labels = f"com.docker.compose.project={project},com.docker.compose.service={service}"
    return json.dumps({
        "Command": '"python -m scripts.serve"', "ID": "0123456789ab",
        "Image": "qwen3-vllm-stack:cu124", "Labels": labels, "Names": f"{project}-{service}-1",
        "Ports": ports, "State": "running", "Status": "Up 5 minutes (healthy)",
    }) + "\n"  # fmt: skip


@pytest.mark.unit
def test_port_held_by_this_stack_or_another_container(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        # the stack: the gateway publishes HOST_PORT, vllm (holding the GPU) publishes nothing
        ours = ps_line("qwen3-vllm-stack", "gateway", f"127.0.0.1:{port}->8080/tcp")
        ours += ps_line("qwen3-vllm-stack", "vllm", "8000/tcp")
        host = gpu_host(tmp_path).set("docker-ps.jsonl", ours)
        rows = check(host, tmp_path, HOST_PORT=str(port))
        assert rows["host port"].status == OK and "this stack" in rows["host port"].detail
        assert rows["GPU free memory"].status == OK  # its memory is the stack's own
        other = ps_line("webapp", "web", f"0.0.0.0:{port}->80/tcp, :::{port}->80/tcp")
        rows = check(gpu_host(tmp_path).set("docker-ps.jsonl", other), tmp_path,
                     HOST_PORT=str(port))  # fmt: skip
        assert rows["host port"].status == FAIL and "webapp-web-1" in rows["host port"].detail


@pytest.mark.unit
def test_no_nvidia_runtime_and_its_alternatives(tmp_path):
    host = gpu_host(tmp_path).edit_json("docker-info.json", lambda d: d["Runtimes"].pop("nvidia"))
    assert fails(check(host, tmp_path)) == {"NVIDIA runtime"}
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    (cdi / "nvidia.yaml").write_text("cdiVersion: 0.5.0\nkind: nvidia.com/gpu\n")
    host.edit_json("docker-info.json", lambda d: d.update(CDISpecDirs=[str(cdi)]))
    assert check(host, tmp_path)["NVIDIA runtime"].status == OK


@pytest.mark.unit
def test_too_few_gpus(tmp_path):
    rows = check(gpu_host(tmp_path), tmp_path, TENSOR_PARALLEL_SIZE="2", GPU_COUNT="2")
    assert rows["GPU count"].status == FAIL
    assert rows["GPU count"].suggest == {"TENSOR_PARALLEL_SIZE": "1", "GPU_COUNT": "1"}
    assert "(at TENSOR_PARALLEL_SIZE=1)" in rows["GPU memory"].detail
    rows = check(gpu_host(tmp_path, gpu_csv(2)), tmp_path, TENSOR_PARALLEL_SIZE="2", GPU_COUNT="2")
    assert fails(rows) == set() and "per GPU (TP=2)" in rows["GPU memory"].detail
    # GPU_COUNT = TENSOR_PARALLEL_SIZE x replicas: more than visible is a FAIL with the count
    rows = check(gpu_host(tmp_path), tmp_path, GPU_COUNT="2")
    assert fails(rows) == {"GPU count"} and rows["GPU count"].suggest == {"GPU_COUNT": "1"}
    assert rows["GPU count"].detail.startswith("GPU_COUNT=2 but 1 GPU(s) visible")
    # ... also where NVIDIA_VISIBLE_DEVICES leaves one of two
    rows = check(gpu_host(tmp_path, gpu_csv(2)), tmp_path, GPU_COUNT="2",
                 NVIDIA_VISIBLE_DEVICES="1")  # fmt: skip
    count = rows["GPU count"]
    assert fails(rows) == {"GPU count"} and count.suggest == {"GPU_COUNT": "1"}
    assert "NVIDIA_VISIBLE_DEVICES=1: 1 of the host's 2 GPUs" in count.detail
    assert "GPU_COUNT=1 in .env" in count.fix


@pytest.mark.unit
@pytest.mark.parametrize(
    "settings, message, fix",
    [  # (the bad inputs of issue #12)
        ({"TENSOR_PARALLEL_SIZE": "2", "GPU_COUNT": "3"}, "GPU_COUNT=3 is not a multiple of "
         "TENSOR_PARALLEL_SIZE=2", "GPU_COUNT=2 in .env (one replica), or a multiple of "
         "TENSOR_PARALLEL_SIZE=2 up to 4"),
        ({"TENSOR_PARALLEL_SIZE": "2"}, "GPU_COUNT=1 is not a multiple", "GPU_COUNT=2 in .env"),
        ({"GPU_COUNT": "all"}, "GPU_COUNT='all' must be a whole number between 1 and 64",
         "GPU_COUNT=1 in .env (one replica), or a multiple of TENSOR_PARALLEL_SIZE=1 up to 4"),
        ({"GPU_COUNT": "0"}, "GPU_COUNT='0' must be between 1 and 64", "GPU_COUNT=1 in .env"),
    ],
)  # fmt: skip
def test_gpu_count_that_is_not_a_whole_number_of_replicas(tmp_path, settings, message, fix):
    rows = check(gpu_host(tmp_path, gpu_csv(4)), tmp_path, **settings)
    assert fails(rows) == {"settings", "GPU count"}
    assert message in rows["settings"].detail
    count = rows["GPU count"]
    assert count.detail.startswith(message) and count.fix.startswith(fix)
    tp = settings.get("TENSOR_PARALLEL_SIZE", "1")
    assert count.suggest == {"GPU_COUNT": tp}  # the other rows judged one replica
    memory = rows["GPU memory"]
    assert memory.status == OK and ("per GPU (TP=2)" in memory.detail) == (tp == "2")


@pytest.mark.unit
def test_a_busy_gpu_outside_the_visible_ones_does_not_count(tmp_path):
    """Issue #12: GPU 0 busy, the stack on GPU 1."""
    busy = gpu_csv(1, used=60000) + gpu_csv(2).splitlines(keepends=True)[1]
    rows = check(gpu_host(tmp_path, busy), tmp_path)
    assert rows["GPU free memory"].status == FAIL and "GPU 0" in rows["GPU free memory"].detail
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        rows = check(gpu_host(tmp_path, busy), tmp_path, **{name: "1"})
        assert fails(rows) == set(), name
        assert rows["GPU free memory"].detail.startswith("GPU 1: 0 MiB in use")


@pytest.mark.unit
@pytest.mark.parametrize(
    "version, status", [("2.20.2", FAIL), ("v2.24.3", FAIL), ("2.24.4", OK), ("5.6.1", OK)]
)
def test_compose_version(tmp_path, version, status):
    host = gpu_host(tmp_path).set("docker-compose-version.txt", version + "\n")
    row = check(host, tmp_path)["Compose plugin"]
    assert row.status == status
    if status == FAIL:
        assert "docker-compose-plugin" in row.fix and "cli-plugins" in row.fix


@pytest.mark.unit
def test_compose_missing_and_engine_unreachable(tmp_path):
    err = "docker: 'compose' is not a docker command.\n"
    host = gpu_host(tmp_path).set("docker-compose-version.txt", "", 1, err)
    assert check(host, tmp_path)["Compose plugin"].status == FAIL
    denied = (
        "permission denied while trying to connect to the Docker daemon socket at "
        'unix:///var/run/docker.sock: Get "http://%2Fvar%2Frun%2Fdocker.sock/v1.41/version"\n'
    )
    host = gpu_host(tmp_path).edit_json("docker-version.json", lambda d: d.update(Server=None))
    host.over["docker-version.json"] = (1, host.over["docker-version.json"][1], denied)
    host.set("docker-info.json", "", 1, denied)
    rows = check(host, tmp_path)
    assert (
        rows["Docker engine"].status == FAIL and "usermod -aG docker" in rows["Docker engine"].fix
    )
    assert rows["NVIDIA runtime"].status == WARN  # not checked, not guessed


@pytest.mark.unit
def test_no_docker_and_no_driver_is_rows_not_a_traceback(tmp_path):
    host = RecordedHost(real=tmp_path)
    for f in ("docker-version.json", "docker-info.json", "docker-compose-version.txt",
              "docker-ps.jsonl", "docker-volume-inspect.json"):  # fmt: skip
        host.set(f, "", 127, "docker: command not found")
    rows = check(host, tmp_path)
    assert "docs.docker.com/engine/install" in rows["Docker engine"].fix
    assert {"Docker engine", "Compose plugin", "NVIDIA driver"} <= fails(rows)


def complete_volume(tmp_path: Path, model_id: str, config: dict | None = None) -> Path:
    """A models volume as `download` leaves it: files, then the completeness record."""
    mount = tmp_path / "volumes" / "qwen3-vllm-stack_models" / "_data"
    folder = mount / model_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config or QWEN3_8B_CONFIG))
    files = {"config.json": {"size": (folder / "config.json").stat().st_size, "sha256": "-"}}
    manifest.write(folder, files, model_id=model_id)
    return mount


def with_volume(host: RecordedHost, mount: Path) -> RecordedHost:
    inspect = {"Driver": "local", "Mountpoint": str(mount), "Name": "qwen3-vllm-stack_models"}
    return host.set("docker-volume-inspect.json", json.dumps(inspect))


@pytest.mark.unit
def test_offline_hub_with_a_complete_volume(tmp_path):
    offline = gpu_host(tmp_path, online=False)
    rows = check(offline, tmp_path)
    assert rows["model hub"].status == FAIL and "MODEL_SOURCE=huggingface" in rows["model hub"].fix
    host = with_volume(gpu_host(tmp_path, online=False), complete_volume(tmp_path, "Qwen/Qwen3-8B"))
    rows = check(host, tmp_path, MODEL_SOURCE="huggingface")
    assert rows["model hub"].status == OK and "offline" in rows["model hub"].detail
    assert "huggingface.co" in rows["model hub"].detail
    assert "the model is downloaded" in rows["disk"].detail


@pytest.mark.unit
def test_unreadable_volume_is_read_through_the_local_image_only(tmp_path):
    mount = complete_volume(tmp_path, "Qwen/Qwen3-8B")
    host = with_volume(gpu_host(tmp_path, online=False), Path("/root-only") / mount.name)
    rows = check(host, tmp_path)
    assert rows["model hub"].status == FAIL
    runs = [c for c in host.calls if c[:2] in (["docker", "run"], ["docker", "image"])]
    assert runs and all(c[:2] == ["docker", "image"] for c in runs)  # no image here: no run


@pytest.mark.unit
def test_unknown_model_size(tmp_path):
    rows = check(gpu_host(tmp_path), tmp_path, MODEL_ID="someone/Other-8B")
    assert rows["GPU memory"].status == WARN and "unknown model size" in rows["GPU memory"].detail
    # with its config.json in a complete volume, the numbers come from there
    mount = complete_volume(
        tmp_path, "someone/Other-8B", {**QWEN3_8B_CONFIG, "num_hidden_layers": 72}
    )
    host = with_volume(gpu_host(tmp_path, gpu_csv(name="NVIDIA L4", total=23034)), mount)
    rows = check(host, tmp_path, MODEL_ID="someone/Other-8B")
    assert rows["GPU memory"].status == FAIL  # twice Qwen3-8B's layers: no longer fits 24 GB


@pytest.mark.unit
def test_bad_settings_are_a_row_and_the_rest_still_runs(tmp_path):
    rows = check(gpu_host(tmp_path), tmp_path, "MAX_MODEL_LEN=8k\nTENSOR_PARALLEL_SIZE=3\n")
    assert rows["settings"].status == FAIL
    assert "MAX_MODEL_LEN='8k'" in rows["settings"].detail
    assert "TENSOR_PARALLEL_SIZE='3'" in rows["settings"].detail
    assert rows["GPU memory"].status == OK  # judged on the defaults meanwhile
    assert rows["MAX_MODEL_LEN"].status == FAIL and "'8k'" in rows["MAX_MODEL_LEN"].detail
    assert "MAX_MODEL_LEN=8192" in rows["MAX_MODEL_LEN"].fix
    assert rows["TENSOR_PARALLEL_SIZE"].status == FAIL
    assert "must be 1, 2, 4 or 8" in rows["TENSOR_PARALLEL_SIZE"].detail
    rows = check(gpu_host(tmp_path), tmp_path, "MAX_MODEL_LEN 8192\n")
    assert rows["settings"].status == FAIL and "line 1" in rows["settings"].detail


@pytest.mark.unit
def test_compose_reads_env_file_and_environment(tmp_path):
    """Doctor asks Compose for .env under the environment; the values it reports are Compose's."""
    text = (
        "# comment\n\nexport MODEL_SOURCE=huggingface\nMAX_MODEL_LEN=4096  # inline comment\n"
        "SERVED_MODEL_NAME='Qwen3 #1'\nSERVE_EXTRA_ARGS=\"--max-num-seqs 64\"\n"
        "HF_ENDPOINT=${MIRROR:-https://hf-mirror.example}\n"
    )
    (tmp_path / ".env").write_text(text)
    p = compose.ask(compose.Compose(env_file=tmp_path / ".env", environ={"MAX_MODEL_LEN": "2048"}))
    want = {"MODEL_SOURCE": "huggingface", "MAX_MODEL_LEN": "2048",  # the environment wins
            "SERVED_MODEL_NAME": "Qwen3 #1", "SERVE_EXTRA_ARGS": "--max-num-seqs 64",
            "HF_ENDPOINT": "https://hf-mirror.example"}  # fmt: skip
    assert {k: p.variables.get(k) for k in want} == want and p.env_read and not p.error
    vllm, download = p.service_env("vllm"), p.service_env("download")
    assert {k: vllm[k] for k in ("MAX_MODEL_LEN", "SERVED_MODEL_NAME")} == {
        "MAX_MODEL_LEN": "2048", "SERVED_MODEL_NAME": "Qwen3 #1"}  # fmt: skip
    assert download["HF_ENDPOINT"] == "https://hf-mirror.example" and "HF_ENDPOINT" not in vllm
    # and the rows use them: the hub download asks, MAX_MODEL_LEN as the container gets it
    rows = check(gpu_host(tmp_path), tmp_path, text)
    assert rows["model hub"].detail.startswith("huggingface: https://hf-mirror.example answers")
    assert rows["MAX_MODEL_LEN"].detail.startswith("4096 <= 40960")


@pytest.mark.unit
def test_bad_env_file_line_is_the_settings_row(tmp_path):
    rows = check(gpu_host(tmp_path), tmp_path, "A=1\nMAX_MODEL_LEN 8192\n", MAX_MODEL_LEN="99")
    row = rows["settings"]
    assert row.status == FAIL and "line 2" in row.detail and row.fix.startswith("fix that line")
    # the other rows go on with the process environment alone, and say so
    assert "from the process environment only" in row.detail
    assert "MAX_MODEL_LEN='99' must be between 256 and 40960" in row.detail


@pytest.mark.unit
def test_settings_are_judged_as_their_reader_gets_them(tmp_path):
    # SERVE_PORT is not passed to any container: whatever .env says, nothing reads it
    rows = check(gpu_host(tmp_path), tmp_path, "SERVE_PORT=eighty\n")
    assert rows["settings"].status == OK
    # the CPU override maps CPU_MEMORY_UTILIZATION onto the container's GPU_MEMORY_UTILIZATION
    rows = check(gpu_host(tmp_path), tmp_path, "CPU_MEMORY_UTILIZATION=1.5\n",
                 COMPOSE_FILE="compose.yaml:compose.cpu.yaml")  # fmt: skip
    assert "GPU_MEMORY_UTILIZATION='1.5' must be between 0.05 and 0.98" in rows["settings"].detail
    assert rows["NVIDIA runtime"].detail.startswith("not needed")
    # Compose's own settings and the gateway's come from Compose's variables
    rows = check(gpu_host(tmp_path), tmp_path, "GATEWAY_RATE=0\n", TRACK="cu999")
    assert "GATEWAY_RATE='0' must be between 1 and 100000" in rows["settings"].detail
    assert "TRACK='cu999' must be one of cu124, cu130" in rows["settings"].detail


@pytest.mark.unit
def test_compose_cannot_resolve_the_project(tmp_path):
    """A value Compose itself refuses: its words, and the other values still read from .env."""
    rows = check(gpu_host(tmp_path), tmp_path, "SERVE_MEMORY_LIMIT=lots\nMAX_MODEL_LEN=8k\n")
    detail = rows["settings"].detail
    assert rows["settings"].status == FAIL and "mem_limit" in detail and "'lots'" in detail
    assert "MAX_MODEL_LEN='8k'" in detail and rows["MAX_MODEL_LEN"].status == FAIL
    assert "Compose could not resolve the services" in detail
    rows = check(gpu_host(tmp_path), tmp_path, HOST_PORT="80a")
    assert "Compose: invalid hostPort: 80a" in rows["settings"].detail
    port = rows["host port"]
    assert port.status == FAIL and port.detail.startswith("HOST_PORT='80a' must be a whole number")
    assert port.suggest == {"HOST_PORT": "8000"}


@pytest.mark.unit
def test_without_compose_settings_come_from_the_environment(tmp_path):
    err = "docker: 'compose' is not a docker command.\nSee 'docker --help'\n"
    no_compose = gpu_host(tmp_path).set("docker-compose-version.txt", "", 1, err)
    rows = check(no_compose, tmp_path, "MAX_MODEL_LEN=8k\n", TENSOR_PARALLEL_SIZE="3")
    plugin = rows["Compose plugin"]
    assert plugin.status == FAIL and "docker-compose-plugin" in plugin.fix
    row = rows["settings"]
    assert row.status == FAIL and "TENSOR_PARALLEL_SIZE='3'" in row.detail
    assert "8k" not in row.detail and "from the process environment only" in row.detail
    assert not [c for c in no_compose.calls if "config" in c]  # no Compose, no config asked
    # a .env that nothing reads is a FAIL naming the plugin, even when the rest is valid
    rows = check(no_compose, tmp_path, MAX_MODEL_LEN="4096")
    row = rows["settings"]
    assert row.status == FAIL and "the Compose plugin is missing" in row.detail, row
    assert "docker-compose-plugin" in row.fix
    # without a .env the environment and the defaults are the whole truth
    (tmp_path / ".env").unlink()
    rows = check(no_compose, tmp_path, MAX_MODEL_LEN="4096")
    assert rows["settings"].status == OK and "process environment only" in rows["settings"].detail
    assert rows["MAX_MODEL_LEN"].detail.startswith("4096")


# --- the recorded H100 --------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.skipif(
    not H100_RECORDED.exists(),
    reason="tests/fixtures/hosts/h100/nvidia-smi.csv not recorded yet: run "
    "`bash tests/fixtures/hosts/record.sh h100` on the lent H100",
)
def test_recorded_h100(tmp_path):
    gpus = gpu_checks.parse_gpus(H100_RECORDED.read_text())
    assert gpus and gpus[0].name == "NVIDIA H100 80GB HBM3" and gpus[0].total_mib == 81559
    assert driver_checks.parse_version(gpus[0].driver) >= (580,)  # 580.159.04 on 2026-11-24
    for track in ("cu124", "cu130"):
        assert driver_checks.check_driver(track, gpus).status == OK
    rows = check(gpu_host(tmp_path, H100_RECORDED.read_text()), tmp_path, MAX_MODEL_LEN="40960")
    assert fails(rows) == set() and rows["GPU memory"].status == OK


# --- the container start (scripts/serve.py) -----------------------------------------------------


@pytest.mark.unit
def test_container_check_lines():
    lines: list[str] = []
    t4 = gpu_checks.parse_gpus(gpu_csv(name="Tesla T4", total=15360))
    ok = container.container_check(load({}), {"CUDA_VERSION": "12.4.1"}, lines.append,
                                   lambda: (t4, ""))  # fmt: skip
    assert not ok and any(ln.startswith("serve: preflight: ") and "; fix: " in ln for ln in lines)
    lines.clear()
    missing = (None, "nvidia-smi not found")
    assert container.container_check(load({}), {}, lines.append, lambda: missing)
    assert len(lines) == 1 and "warning: nvidia-smi not found" in lines[0]
    # the track comes from the image: a CUDA 13 image on a 570 driver fails even with TRACK unset
    old = gpu_checks.parse_gpus(gpu_csv(driver="570.86.15"))
    rows = container.container_rows(load({}), {"CUDA_VERSION": "13.0.1"}, old)
    assert rows[0].status == FAIL and "cu130" in rows[0].detail


def fake_nvidia_smi(tmp_path: Path, csv: str) -> dict[str, str]:
    """A PATH on which `nvidia-smi` prints the (derived) recorded answer."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (tmp_path / "answer.csv").write_text(csv)
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\ncat '{tmp_path / 'answer.csv'}'\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def serve_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "PATH")}
    env.update(PYTHONPATH=str(ROOT), SERVE_DEVICE="cuda", LOAD_FORMAT="dummy", **extra)
    return env


@pytest.mark.native  # scripts.serve imports vLLM and torch: 8-16 s
def test_serve_stops_before_vllm_when_the_model_does_not_fit(tmp_path):
    env = serve_env(**fake_nvidia_smi(tmp_path, gpu_csv(name="Tesla T4", total=15360)))
    r = subprocess.run([sys.executable, "-m", "scripts.serve"], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    print(r.stderr)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "serve: preflight: the weights do not fit" in r.stderr
    assert "fix: SERVE_PROFILE=fp8" in r.stderr and "Traceback" not in r.stderr


# --- the real CLI on this machine ---------------------------------------------------------------


def run_doctor(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`python3 -m scripts.doctor` with no site-packages (-S: it must need the stdlib only)."""
    base = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "PATH", "USER")}
    return subprocess.run(
        [sys.executable, "-S", "-m", "scripts.doctor", "--env-file", str(tmp_path / ".env"), *args],
        env={**base, **env}, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.native  # the real doctor on this machine: docker, nvidia-smi, ports, disks
@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_this_machine_live_is_its_recording(tmp_path, device):
    """`python3 -m scripts.doctor` on this machine, as a user runs it, says what the recording
    of this machine (tests/fixtures/hosts/this-machine, which the unit tier replays) says: the
    same rows with the same status, the summary line counted from them, and the exit status
    1 exactly when a row FAILs. A check that breaks on a real host, or a recording that no
    longer matches the machine, fails here."""
    settings = {"SERVE_DEVICE": device} if device == "cpu" else {}
    key = tmp_path / "api_key"
    key.write_text("k" * 32)
    live_env = {"API_KEY_FILE": str(key), "HOST_PORT": str(free_port()), **settings}
    (tmp_path / ".env").write_text("")
    table = run_doctor(tmp_path, **live_env)
    print(f"\n$ python3 -m scripts.doctor  ({device})\n{table.stdout}{table.stderr}")
    r = run_doctor(tmp_path, "--json", **live_env)
    live = {row["check"]: row["status"] for row in json.loads(r.stdout)["rows"]}
    recorded = check(RecordedHost(real=tmp_path), tmp_path, "", **live_env)
    # the hub is asked over this machine's network (offline here and in CI, like the recording)
    assert live == {name: row.status for name, row in recorded.items()}, (live, table.stdout)
    counts = {st: sum(s == st for s in live.values()) for st in (OK, WARN, FAIL)}
    assert f"doctor: {counts[OK]} OK, {counts[WARN]} WARN, {counts[FAIL]} FAIL: " in table.stdout
    assert_printed("doctor: ", table.stdout)  # the summary line the README quotes
    assert table.returncode == r.returncode == int(counts[FAIL] > 0), table.stdout


@pytest.mark.unit
def test_usage_error_exits_2(tmp_path):
    r = run_doctor(tmp_path, "--no-such-flag")
    assert r.returncode == 2 and "usage:" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.unit
def test_a_crashing_check_is_one_row(tmp_path, monkeypatch):
    def broken(f):
        raise KeyError("Ports")

    monkeypatch.setattr(network, "host_port", broken)
    host = gpu_host(tmp_path)

    def no_statvfs(path):
        raise PermissionError(13, "Permission denied", path)

    host.disk_free = no_statvfs
    rows = check(host, tmp_path)
    assert rows["host port"].status == FAIL and "KeyError" in rows["host port"].detail
    assert rows["disk"].status == WARN and "cannot read the free space" in rows["disk"].detail
    assert rows["model hub"].status == OK  # the checks after it still ran


@pytest.mark.unit
def test_api_key_file(tmp_path):
    key = tmp_path / "keys"
    key.write_text("# one key a line\n\n")
    rows = check(gpu_host(tmp_path), tmp_path, API_KEY_FILE=str(key))
    assert (
        rows["API key"].status == FAIL and rows["API key"].fix == "python3 -m scripts.init_secrets"
    )
    key.write_text("# one key a line\nfirst\nsecond\n")
    assert (
        "2 key(s)" in check(gpu_host(tmp_path), tmp_path, API_KEY_FILE=str(key))["API key"].detail
    )
