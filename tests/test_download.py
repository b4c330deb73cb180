"""scripts.download against the fake ModelScope hub, through the real modelscope client, run as
the CLI the download container runs. Files must end byte-identical, verified, and recorded."""

from __future__ import annotations

import json
import shutil
import time

import pytest

from scripts import manifest
from tests.conftest import MODEL_ID, free_port, run_download
from tests.fixtures.fakehub import FakeHub, Faults

pytestmark = pytest.mark.e2e


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
    r = run_download(tmp_path, own_hub.url)
    secs = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
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
