"""scripts.download against the fake ModelScope hub, through the real modelscope client, run as
the CLI the download container runs. Files must end byte-identical, verified, and recorded.
Progress lines, the free-space check (on a real small tmpfs) and the fault figures as well."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from bench import standins
from scripts import download
from scripts.stack import manifest
from scripts.stack.settings import SettingsError, load
from tests.conftest import MODEL_ID, ROOT, cpu_env, free_port, run_download
from tests.fixtures.fakehub import FakeHub, Faults

pytestmark = pytest.mark.native


def source_hashes(folder):
    return {
        p.relative_to(folder).as_posix(): manifest.sha256_file(p)
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def own_hub(scripted_model):
    """A hub of the test's own, so faults never leak into other tests."""
    with FakeHub({MODEL_ID: scripted_model}) as h:
        yield h


def test_download_is_byte_identical_and_recorded(tmp_path, scripted_model, own_hub):
    t0 = time.monotonic()
    r = run_download(tmp_path, own_hub.url, DOWNLOAD_PROGRESS_INTERVAL="0")
    secs = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    # 0 turns the progress lines off (and does not spin out lines at full speed)
    assert not [ln for ln in r.stdout.splitlines() if PROGRESS.fullmatch(ln)], r.stdout
    assert "progress every" not in r.stdout
    target = tmp_path / MODEL_ID
    got = {k: v for k, v in source_hashes(target).items() if not k.startswith(".qvs")}
    assert got == source_hashes(scripted_model)
    record = json.loads((target / manifest.NAME).read_text())
    assert {k: v["sha256"] for k, v in record["files"].items()} == got
    mb = sum(p.stat().st_size for p in scripted_model.iterdir()) / 1e6
    print(f"\nscripts.download: {mb:.1f} MB from the fake hub in {secs:.1f}s (process included)")

    t0 = time.monotonic()
    again = run_download(tmp_path, own_hub.url)
    assert again.returncode == 0, again.stderr
    assert "nothing to download" in again.stdout
    assert own_hub.stats["files_served"] == len(got), "the second run fetched files again"
    print(f"second run (verify only): {time.monotonic() - t0:.1f}s: {again.stdout.strip()}")


def test_flipped_byte_is_found_and_refetched(tmp_path, scripted_model, own_hub):
    assert run_download(tmp_path, own_hub.url).returncode == 0
    weights = tmp_path / MODEL_ID / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(12345)
        b = f.read(1)
        f.seek(12345)
        f.write(bytes([b[0] ^ 0xFF]))
    served_before = own_hub.stats["files_served"]
    r = run_download(tmp_path, own_hub.url)
    assert r.returncode == 0, r.stderr
    assert "model.safetensors differs from the hub's hash" in r.stdout
    assert own_hub.stats["files_served"] == served_before + 1
    assert manifest.sha256_file(weights) == manifest.sha256_file(scripted_model / weights.name)


def test_cut_transfer_resumes(tmp_path, scripted_model, own_hub):
    own_hub.faults = Faults(cut_after_bytes=10_000_000, cut_times=2)
    r = run_download(tmp_path, own_hub.url)
    assert r.returncode == 0, r.stderr
    assert own_hub.stats["cuts"] == 2
    assert own_hub.stats["ranged_requests"] >= 1, "the client restarted instead of resuming"
    weights = tmp_path / MODEL_ID / "model.safetensors"
    assert manifest.sha256_file(weights) == manifest.sha256_file(scripted_model / weights.name)
    print(f"\ncut twice at 10 MB, resumed with ranged requests: {own_hub.stats['ranged_requests']}")


def test_wrong_hash_fails_clearly_and_keeps_nothing(tmp_path, own_hub):
    own_hub.faults = Faults(wrong_sha256=True)
    r = run_download(tmp_path, own_hub.url)
    assert r.returncode == 2
    assert "integrity check failed" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / MODEL_ID / manifest.NAME).exists()
    assert not (tmp_path / MODEL_ID / "model.safetensors").exists()


def test_unknown_repo_names_the_fix(tmp_path, own_hub):
    r = run_download(tmp_path, own_hub.url, MODEL_ID="Qwen/Qwen3-8B-typo")
    assert r.returncode == 2
    assert "Qwen/Qwen3-8B-typo (revision master) does not exist" in r.stderr
    assert "check MODEL_ID" in r.stderr and "Traceback" not in r.stderr


def test_a_quantized_profile_fetches_qwens_checkpoint(tmp_path):
    """SERVE_PROFILE=awq with the default MODEL_ID downloads Qwen/Qwen3-8B-AWQ (the AWQ stand-in
    here) into its own folder; fp8 asks for Qwen/Qwen3-8B-FP8, which this hub lacks, and the
    message says where that name came from."""
    awq = standins.ensure("qwen3-8b-shape-awq")
    with FakeHub({"Qwen/Qwen3-8B-AWQ": awq}) as hub:
        r = run_download(tmp_path, hub.url, SERVE_PROFILE="awq", SERVE_DEVICE="cuda",
                         DOWNLOAD_PROGRESS_INTERVAL="0")  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "Qwen/Qwen3-8B-AWQ: " in r.stdout and not (tmp_path / MODEL_ID).exists()
        target = tmp_path / "Qwen" / "Qwen3-8B-AWQ"
        got = {k: v for k, v in source_hashes(target).items() if not k.startswith(".qvs")}
        assert got == source_hashes(awq)
        assert json.loads((target / manifest.NAME).read_text())["model_id"] == "Qwen/Qwen3-8B-AWQ"
        r = run_download(tmp_path, hub.url, SERVE_PROFILE="fp8", SERVE_DEVICE="cuda")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        "Qwen/Qwen3-8B-FP8 (SERVE_PROFILE=fp8's checkpoint of MODEL_ID=Qwen/Qwen3-8B, revision "
        "master) does not exist" in r.stderr
    ), r.stderr
    assert "check MODEL_ID and MODEL_REVISION in .env, or SERVE_PROFILE=default" in r.stderr


def test_unreachable_hub_is_one_line_and_keeps_a_complete_volume(tmp_path, served_models):
    dead = f"http://127.0.0.1:{free_port()}"
    r = run_download(tmp_path / "empty", dead)
    assert r.returncode == 2
    # the client logs its retries; our verdict is one line, and no traceback
    ours = [ln for ln in r.stderr.splitlines() if ln.startswith("download:")]
    assert len(ours) == 1 and "cannot reach ModelScope" in ours[0], r.stderr
    assert "Traceback" not in r.stderr
    copy = tmp_path / "copy"
    shutil.copytree(served_models, copy)
    kept = run_download(copy, dead)
    assert kept.returncode == 0, kept.stderr
    assert "kept the local copy" in kept.stdout


def test_serve_refuses_an_incomplete_download(tmp_path, served_models):
    import subprocess
    import sys

    from tests.conftest import ROOT, cpu_env

    copy = tmp_path / "copy"
    shutil.copytree(served_models, copy)
    (copy / MODEL_ID / manifest.NAME).unlink()
    r = subprocess.run(
        [sys.executable, "-m", "scripts.serve", "--print"],
        cwd=ROOT,
        env=cpu_env(MODELS_DIR=str(copy)),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "no completed download" in r.stderr and "docker compose run --rm download" in r.stderr


# ---------------------------------------------------------------------------------------------
# progress lines (issue #7)
# ---------------------------------------------------------------------------------------------
UNIT = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
PROGRESS = re.compile(
    r"download: (?P<done>\d+)/(?P<files>\d+) files, (?P<got>[\d.]+)/(?P<total>[\d.]+) "
    r"(?P<unit>k?B|MB|GB) \((?P<pct>\d+)%\), (?P<rate>[\d.]+) (?P<rate_unit>k?B|MB|GB)/s, "
    r"ETA (?P<eta>--|\d+s|\d+m\d\ds|\d+h\d\dm)(?:; now (?P<now>.+))?"
)
SUMMARY = re.compile(
    r"download: \S+: (?P<fetched>\d+) files fetched, (?P<verified>\d+) verified, \S+ \S+ "
    r"\((?P<bytes>\d+) bytes\); fetched (?P<fetched_size>\S+ \S+) in [\d.]+s "
    r"\([\d.]+ \S+/s average\), kept (?P<kept>\d+) files \(\S+ \S+\); done in [\d.]+s"
)
NOISE = ("\r", "it/s", "B/s]", "%|", "\x1b[")  # tqdm's bars, as they land in compose logs


def source_sizes(folder):
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*")
            if p.is_file()}  # fmt: skip


@pytest.mark.parametrize(
    "mode,rate,extra",
    [
        ("single-stream", 12_000_000, {}),
        # big files in ranged parts `<file>_<start>_<end>`, merged into `<file>.parallel_tmp`
        (
            "parallel-parts",
            4_000_000,
            {
                "MODELSCOPE_DOWNLOAD_PARALLEL_THRESHOLD_MB": "10",
                "MODELSCOPE_DOWNLOAD_PARALLEL_WORKERS": "4",
                "MODELSCOPE_DOWNLOAD_PART_SIZE_MB": "16",
            },
        ),
    ],
)
def test_progress_lines_read_well_in_compose_logs(
    tmp_path, scripted_model, own_hub, mode, rate, extra
):
    own_hub.faults = Faults(bytes_per_second=rate)  # per response
    r = run_download(tmp_path, own_hub.url, DOWNLOAD_PROGRESS_INTERVAL="1", **extra)
    assert r.returncode == 0, r.stdout + r.stderr
    for noise in NOISE:
        assert noise not in r.stdout + r.stderr, f"{noise!r} in the output:\n{r.stderr[-2000:]}"
    sizes = source_sizes(scripted_model)
    total = sum(sizes.values())
    lines = [m for ln in r.stdout.splitlines() if (m := PROGRESS.fullmatch(ln))]
    print(f"\n{mode} at {rate / 1e6:.0f} MB/s per response:\n" + r.stdout)
    assert len(lines) >= 4, r.stdout

    got = [float(m["got"]) * UNIT[m["unit"]] for m in lines]
    for m in lines:
        assert int(m["files"]) == len(sizes)
        assert float(m["total"]) * UNIT[m["unit"]] == pytest.approx(total, rel=0.001)
        assert abs(int(m["pct"]) - 100 * float(m["got"]) / float(m["total"])) <= 1.5, m[0]
        speed = float(m["rate"]) * UNIT[m["rate_unit"]]
        # the hub sends at most `rate` per response and the client runs at most 4 files x 4 parts
        assert speed <= 16 * rate * 1.2, m[0]
        assert (m["eta"] == "--") == (speed == 0), m[0]
    assert got == sorted(got) and got[-1] > got[0], "bytes on disk went backwards"
    moving = [m for m in lines if float(m["rate"]) > 0]
    assert len(moving) >= 3, r.stdout
    assert max(int(m["done"]) for m in lines) < len(sizes)  # lines come while files are in flight
    big = max(sizes, key=sizes.get)
    assert any(big in (m["now"] or "") for m in lines), r.stdout

    summary = SUMMARY.fullmatch(r.stdout.splitlines()[-1])
    assert summary, r.stdout
    assert int(summary["fetched"]) == int(summary["verified"]) == len(sizes)
    assert int(summary["bytes"]) == total and int(summary["kept"]) == 0
    assert summary["fetched_size"] == download.human(total)
    target = tmp_path / MODEL_ID
    got_hashes = {k: v for k, v in source_hashes(target).items() if not k.startswith(".qvs")}
    assert got_hashes == source_hashes(scripted_model)


def test_progress_reads_the_clients_own_partial_files(tmp_path):
    """The partial-file layouts, created with the installed clients' own path functions."""
    from huggingface_hub._local_folder import get_local_download_paths
    from modelscope_hub._download import _incomplete_path

    rf = download.RemoteFile("sub/model.safetensors", 1000)
    final = tmp_path / rf.path
    assert download.on_disk(tmp_path, rf) == (0, False)
    ms = _incomplete_path(final)  # ModelScope, single stream
    ms.parent.mkdir(parents=True)
    ms.write_bytes(b"x" * 300)
    assert download.on_disk(tmp_path, rf) == (300, False)
    ms.unlink()
    hf = get_local_download_paths(tmp_path, rf.path).incomplete_path("0f1e2d3c")  # Hugging Face
    hf.write_bytes(b"x" * 400)
    assert download.on_disk(tmp_path, rf) == (400, False)
    hf.unlink()
    final.write_bytes(b"x" * 999)  # an old copy of another size: not finished, not progress
    assert download.on_disk(tmp_path, rf) == (0, False)
    final.write_bytes(b"x" * 1000)
    assert download.on_disk(tmp_path, rf) == (1000, True)


def test_progress_interval_setting_is_validated():
    assert load({"DOWNLOAD_PROGRESS_INTERVAL": "3"}).download_progress_interval == 3
    assert load({}).download_progress_interval == 10
    with pytest.raises(SettingsError, match=r"DOWNLOAD_PROGRESS_INTERVAL='-1' must be between"):
        load({"DOWNLOAD_PROGRESS_INTERVAL": "-1"})


# ---------------------------------------------------------------------------------------------
# free space (issue #7), on a real small filesystem
# ---------------------------------------------------------------------------------------------
WEIGHTS = "model.safetensors"
SMALL_WEIGHTS = 10_000_000


@pytest.fixture
def small_repo(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (src / WEIGHTS).write_bytes(random.Random(7).randbytes(SMALL_WEIGHTS))
    with FakeHub({MODEL_ID: src}) as hub:
        yield src, hub


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size) -> a fresh tmpfs of that size (root only; unmounted afterwards)."""
    if os.geteuid() != 0:
        pytest.skip("a real small filesystem needs `mount -t tmpfs`, i.e. root; running as "
                    f"uid {os.geteuid()}")  # fmt: skip
    mounted = []

    def mount(size: str):
        d = tmp_path / f"vol{len(mounted)}"
        d.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)],
                           capture_output=True, text=True)  # fmt: skip
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(d)
        return d

    yield mount
    for d in mounted:
        subprocess.run(["umount", str(d)], check=False)


def test_not_enough_space_fails_fast_and_keeps_what_is_there(tmpfs, small_repo):
    src, hub = small_repo
    vol = tmpfs("8m")  # smaller than the 10 MB repo
    target = vol / MODEL_ID
    target.mkdir(parents=True)
    shutil.copy(src / "config.json", target / "config.json")  # a good file from an earlier run
    head = (src / WEIGHTS).read_bytes()[:1_000_000]
    (target / f"{WEIGHTS}.incomplete").write_bytes(head)  # and a partial one
    free = shutil.disk_usage(vol).free
    r = run_download(vol, hub.url)
    assert r.returncode == 2, r.stdout + r.stderr
    (line,) = [ln for ln in r.stderr.splitlines() if ln.startswith("download:")]
    print(f"\n{free} bytes free: {line}")
    assert line.startswith(f"download: not enough space in {target}: need ")
    assert f"({download.human(SMALL_WEIGHTS - len(head))} to fetch + 5%)" in line
    assert line.endswith("free; fix: free space on the Docker host or move Docker's data-root "
                         "(doctor checks this)")  # fmt: skip
    assert "Traceback" not in r.stderr
    assert hub.stats["by_file"] == {} and hub.stats["bytes_sent"] == 0, "it fetched first"
    assert (target / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert (target / f"{WEIGHTS}.incomplete").read_bytes() == head
    assert not (target / manifest.NAME).exists()


def test_space_check_counts_the_partial_file_and_the_download_resumes(tmpfs, small_repo):
    src, hub = small_repo
    vol = tmpfs("12m")  # holds the repo, but not a second copy of the 4 MB already there
    target = vol / MODEL_ID
    target.mkdir(parents=True)
    done = 4_000_000
    (target / f"{WEIGHTS}.incomplete").write_bytes((src / WEIGHTS).read_bytes()[:done])
    free = shutil.disk_usage(vol).free
    assert SMALL_WEIGHTS * download.MARGIN > free > (SMALL_WEIGHTS - done) * download.MARGIN
    r = run_download(vol, hub.url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{download.human(done)} of it on disk from an earlier run" in r.stdout
    ranges = [e["range"] for e in hub.log if e["file"] == WEIGHTS]
    assert ranges == [f"bytes={done}-"]
    assert hub.stats["bytes_by_file"][WEIGHTS] == SMALL_WEIGHTS - done
    assert manifest.sha256_file(target / WEIGHTS) == manifest.sha256_file(src / WEIGHTS)
    manifest.require_complete(target)


# ---------------------------------------------------------------------------------------------
# download faults with figures (issue #6)
# ---------------------------------------------------------------------------------------------
NO_RETRY = {"MODELSCOPE_DOWNLOAD_MAX_RETRIES": "0"}  # the client gives up at once: a failed run
ONLY_WEIGHTS = f"FilePath={WEIGHTS}"
FAULTS = {
    # name: (hub faults, env of the faulted run, its exit code ("kill": SIGKILLed mid-file, as
    # `docker compose kill` does), the hub counter of injected faults)
    "cut-mid-file": ({"cut_after_bytes": 20_000_000}, {}, 0, "cuts"),
    "cut-mid-file-no-retry": ({"cut_after_bytes": 20_000_000}, NO_RETRY, 2, "cuts"),
    "wrong-hash": ({"wrong_sha256": True}, {}, 2, "wrong_sha256_listings"),
    "500s": ({"server_errors": 2, "server_errors_match": ONLY_WEIGHTS}, {}, 0, "status_500"),
    "500s-no-retry": (
        {"server_errors": 1, "server_errors_match": ONLY_WEIGHTS},
        NO_RETRY,
        2,
        "status_500",
    ),
    "slow-killed": ({"bytes_per_second": 20_000_000}, {}, "kill", "throttled_bodies"),
}
KILL_AT = 10_000_000  # bytes of the weights on disk


def run_watched(models_dir, hub_url, src_hashes, kill_at=None, **extra):
    """Run the download while watching the volume: whenever the completion record exists,
    every file must be whole, with no partial file beside it. Returns (result, violations,
    bytes of the weights on disk when killed)."""
    env = cpu_env(MODELS_DIR=str(models_dir), MODELSCOPE_ENDPOINT=hub_url, **extra)
    proc = subprocess.Popen([sys.executable, "-m", "scripts.download"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    out: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f.read()))
        for k, f in (("stdout", proc.stdout), ("stderr", proc.stderr))
    ]
    for th in readers:
        th.start()
    target = models_dir / MODEL_ID
    partial = target / f"{WEIGHTS}.incomplete"
    violations, killed_at = [], None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if (target / manifest.NAME).exists():
            for rel in src_hashes:
                p = target / rel
                if not p.is_file() or (target / f"{rel}.incomplete").exists():
                    violations.append(f"marked complete while {rel} is partial")
        n = partial.stat().st_size if kill_at and killed_at is None and partial.is_file() else 0
        if kill_at and n >= kill_at:
            proc.send_signal(signal.SIGKILL)
            killed_at = n
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for th in readers:
        th.join()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out["stdout"], out["stderr"])
    return result, violations, killed_at


def check_volume(target, src, src_hashes):
    """Nothing corrupt under any name: final files are the source's bytes, partial files are a
    prefix of them, nothing else. Returns the files that are whole."""
    whole = set()
    for p in target.rglob("*"):
        if not p.is_file():
            continue
        rel = p.relative_to(target).as_posix()
        if rel == manifest.NAME:
            continue
        if rel.endswith(".incomplete"):
            orig = src / rel.removesuffix(".incomplete")
            n = p.stat().st_size
            assert n < orig.stat().st_size, f"{rel} is as long as the file"
            with open(orig, "rb") as f:
                assert p.read_bytes() == f.read(n), f"{rel} is not a prefix of the file"
            continue
        assert rel in src_hashes, f"unexpected {rel} in the volume"
        assert manifest.sha256_file(p) == src_hashes[rel], f"{rel} is corrupt"
        whole.add(rel)
    return whole


@pytest.mark.parametrize("fault", list(FAULTS))
def test_download_faults_figures(fault, tmp_path, scripted_model):
    """No partial or corrupt file is ever served (or recorded complete), a clean re-run
    completes byte-identical and resumes instead of starting over; the figures are counted on
    the hub's side: bytes re-fetched = bytes served beyond one full copy of each file."""
    faults, env, expect, counter = FAULTS[fault]
    src_hashes = source_hashes(scripted_model)
    sizes = source_sizes(scripted_model)
    target = tmp_path / MODEL_ID
    with FakeHub({MODEL_ID: scripted_model}, faults=Faults(**faults)) as hub:
        t0 = time.monotonic()
        kill_at = KILL_AT if expect == "kill" else None
        first, violations, killed_at = run_watched(
            tmp_path, hub.url, src_hashes, kill_at=kill_at, **env
        )
        assert violations == []
        if expect == "kill":
            assert killed_at is not None and first.returncode == -signal.SIGKILL, first.stdout
        else:
            assert first.returncode == expect, first.stdout + first.stderr
        whole = check_volume(target, scripted_model, src_hashes)
        if first.returncode == 0:
            record = manifest.require_complete(target)
            assert {k: v["sha256"] for k, v in record["files"].items()} == src_hashes
        else:
            with pytest.raises(manifest.NotReady):
                manifest.require_complete(target)
            if expect == 2:
                verdict = [ln for ln in first.stderr.splitlines() if ln.startswith("download:")]
                assert len(verdict) == 1 and "Traceback" not in first.stderr, first.stderr
        injected = hub.stats[counter]

        hub.faults = Faults()  # the hub recovers; the user re-runs
        seen = len(hub.log)
        second = run_download(tmp_path, hub.url)
        secs = time.monotonic() - t0
        assert second.returncode == 0, second.stdout + second.stderr
        assert check_volume(target, scripted_model, src_hashes) == set(src_hashes)
        record = manifest.require_complete(target)
        assert {k: v["sha256"] for k, v in record["files"].items()} == src_hashes
        # files that were whole after the faulted run are not fetched again
        refetched_files = {e["file"] for e in hub.log[seen:] if e["file"]}
        assert not refetched_files & whole, refetched_files & whole

        resumed = sum(
            1 for e in hub.log
            if e["status"] == 206 and e["range"] and not e["range"].startswith("bytes=0-")
        )  # fmt: skip
        served = hub.stats["bytes_by_file"]
        refetched = sum(max(0, served.get(rel, 0) - size) for rel, size in sizes.items())
    print(
        f"\nfault={fault} injected={injected} resumed={resumed} bytes_refetched={refetched} "
        f"time={secs:.1f}s"
    )
    assert injected >= 1
    if fault.startswith("cut"):
        assert resumed >= 1 and refetched < faults["cut_after_bytes"], "restarted, not resumed"
    elif fault == "slow-killed":
        assert resumed >= 1 and refetched < killed_at, "restarted, not resumed"
    elif fault == "wrong-hash":
        assert whole == set() and refetched >= sum(sizes.values())
    else:  # 500s carry no file bytes
        assert refetched == 0 and resumed == 0
