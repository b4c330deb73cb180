"""scripts.download with MODEL_SOURCE=huggingface against the fake Hugging Face Hub, through the
real huggingface_hub client (HF_ENDPOINT), run as the CLI the download container runs: fresh,
resume, re-verify, a corrupted file re-fetched, a wrong hash, a gated repo with and without a
token, the hub unreachable with a complete volume, and the clear errors. Figures are printed
(`-s`): MB/s from the fake hub, faults injected and resumed."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from scripts.stack import manifest
from tests.conftest import MODEL_ID, ROOT, cpu_env, free_port, hub_env, run_download
from tests.fixtures.fakehf import FakeHF, Faults, git_blob_sha1

pytestmark = pytest.mark.native
WEIGHTS = "model.safetensors"
TOKEN = "hf_granted0123456789"  # a valid token that was granted the gated repo
OTHER = "hf_notgranted98765"  # a valid token of an account without access
SUMMARY = re.compile(r"fetched (?P<size>[\d.]+ \S+) in (?P<secs>[\d.]+)s \((?P<rate>[\d.]+ \S+)/s")


def hashes(folder):
    """Relative path -> sha256 of the model's files (the client's .cache and our record aside)."""
    return {
        p.relative_to(folder).as_posix(): manifest.sha256_file(p)
        for p in folder.rglob("*")
        if p.is_file() and not p.relative_to(folder).as_posix().startswith((".cache/", ".qvs"))
    }


def hf(tmp_path, hub, **extra):
    return run_download(tmp_path, hub.url, "huggingface", **extra)


def verdict(r) -> str:
    """Our one-line verdict on stderr (the client's own warnings aside); no traceback."""
    ours = [ln for ln in r.stderr.splitlines() if ln.startswith("download:")]
    assert len(ours) == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    return ours[0]


@pytest.fixture
def hub(scripted_model):
    with FakeHF({MODEL_ID: scripted_model}) as h:
        yield h


def test_fresh_download_is_byte_identical_recorded_and_verified_again(
    tmp_path, scripted_model, hub
):
    r = hf(tmp_path, hub, DOWNLOAD_PROGRESS_INTERVAL="0")
    assert r.returncode == 0, r.stdout + r.stderr
    target = tmp_path / MODEL_ID
    src = hashes(scripted_model)
    assert hashes(target) == src
    record = manifest.require_complete(target)
    assert record["source"] == "huggingface" and record["revision"] == "main"  # HF's default
    assert {k: v["sha256"] for k, v in record["files"].items()} == src
    # LFS files came from the CDN (another origin) after a 302, small ones from resolve/
    lfs = [e for e in hub.log if e["path"].startswith("/cdn/")]
    assert {e["file"] for e in lfs} >= {WEIGHTS} and hub.stats["redirects"] == len(lfs)
    m = SUMMARY.search(r.stdout)
    total = sum(p.stat().st_size for p in scripted_model.iterdir())
    print(f"\nHugging Face fake hub: {total / 1e6:.1f} MB in {m['secs']}s, {m['rate']}/s "
          f"(scripts.download's own figure, hub to volume)")  # fmt: skip

    served = hub.stats["files_served"]
    again = hf(tmp_path, hub)
    assert again.returncode == 0, again.stderr
    assert "nothing to download" in again.stdout
    assert hub.stats["files_served"] == served, "the second run fetched files again"


def test_corrupted_files_are_found_and_refetched(tmp_path, scripted_model, hub):
    """Both kinds of hashes the Hub lists: sha256 for LFS files, the git blob id for the rest."""
    assert hf(tmp_path, hub).returncode == 0
    target = tmp_path / MODEL_ID
    with open(target / WEIGHTS, "r+b") as f:  # one flipped byte in an LFS file
        f.seek(12345)
        b = f.read(1)
        f.seek(12345)
        f.write(bytes([b[0] ^ 0xFF]))
    config = target / "config.json"  # a small file changed to another of the same size
    text = config.read_text()
    config.write_text(text.replace('"', "'", 1))
    assert git_blob_sha1(config) != git_blob_sha1(scripted_model / "config.json")
    hub.reset_stats()
    r = hf(tmp_path, hub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{WEIGHTS} differs from the hub's hash" in r.stdout
    assert "config.json differs from the hub's hash" in r.stdout
    assert set(hub.stats["bytes_by_file"]) == {WEIGHTS, "config.json"}
    assert hashes(target) == hashes(scripted_model)


def test_cut_transfer_is_resumed_with_a_range_request(tmp_path, scripted_model, hub):
    """The client keeps what it has written and asks for the rest (`Range: bytes=N-`) in the same
    run; it writes in DOWNLOAD_CHUNK_SIZE blocks, so up to one block per cut is sent again."""
    from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

    cut = 30_000_000
    hub.faults = Faults(cut_after_bytes=cut, cut_times=2)
    t0 = time.monotonic()
    r = hf(tmp_path, hub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert hub.stats["cuts"] == 2
    ranges = [e["range"] for e in hub.log if e["range"]]
    assert len(ranges) == 2 and all(not x.startswith("bytes=0-") for x in ranges), ranges
    assert [e["status"] for e in hub.log if e["range"]] == [206, 206]
    sizes = {p.name: p.stat().st_size for p in scripted_model.iterdir()}
    refetched = sum(max(0, n - sizes[f]) for f, n in hub.stats["bytes_by_file"].items())
    assert refetched < 2 * DOWNLOAD_CHUNK_SIZE, "the client restarted instead of resuming"
    assert hashes(tmp_path / MODEL_ID) == hashes(scripted_model)
    print(f"\nHF cut twice at {cut / 1e6:.0f} MB: faults injected=2, resumed=2 "
          f"({', '.join(ranges)}), bytes sent twice {refetched / 1e6:.1f} MB, "
          f"{time.monotonic() - t0:.1f}s")  # fmt: skip


def test_transfers_that_keep_breaking_off_fail_clearly(tmp_path, hub):
    """Cut before the client has written a block, every time: it gives up after its retries."""
    hub.faults = Faults(cut_after_bytes=1_000_000, cut_times=1000)
    r = hf(tmp_path, hub)
    assert r.returncode == 2
    line = verdict(r)
    assert "transfers kept breaking off (RemoteProtocolError)" in line and "re-run" in line, line
    assert not (tmp_path / MODEL_ID / manifest.NAME).exists()
    print(f"\nHF cut {hub.stats['cuts']} times without progress: the client gave up, one line")


def test_wrong_hash_fails_clearly_and_keeps_nothing(tmp_path, hub):
    hub.faults = Faults(wrong_sha256=True)
    r = hf(tmp_path, hub)
    assert r.returncode == 2
    line = verdict(r)
    assert "fail verification" in line and WEIGHTS in line and "re-run" in line, line
    target = tmp_path / MODEL_ID
    assert not (target / manifest.NAME).exists()
    assert not [p for p in target.iterdir() if p.is_file()], "files that failed were kept"


@pytest.fixture
def gated_hub(scripted_model):
    with FakeHF({MODEL_ID: scripted_model}, gated={MODEL_ID: "manual"},
                tokens={TOKEN: {MODEL_ID}, OTHER: set()}) as h:  # fmt: skip
        yield h


@pytest.mark.parametrize(
    "token, status, needle",
    [
        (None, 401, "is gated on Hugging Face: its files need a token (401); accept its terms at "),
        (OTHER, 403, "the account of HF_TOKEN has not been granted access (403); request access "),
        ("hf_typo", 401, "refuses HF_TOKEN (401 invalid credentials); fix HF_TOKEN in .env"),
    ],
    ids=["no-token", "not-granted", "invalid-token"],
)
def test_gated_repo_without_access_names_hf_token(tmp_path, gated_hub, token, status, needle):
    r = hf(tmp_path, gated_hub, **({"HF_TOKEN": token} if token else {}))
    assert r.returncode == 2
    line = verdict(r)
    assert needle in line, line
    assert gated_hub.stats[f"status_{status}"] >= 1
    if token:
        assert token not in r.stdout + r.stderr, "the token was printed"
    assert gated_hub.stats["bytes_sent"] == 0 and not (tmp_path / MODEL_ID / WEIGHTS).exists()


def test_gated_repo_with_a_granted_token(tmp_path, scripted_model, gated_hub):
    r = hf(tmp_path, gated_hub, HF_TOKEN=TOKEN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert TOKEN not in r.stdout + r.stderr
    assert hashes(tmp_path / MODEL_ID) == hashes(scripted_model)
    # the token went to the Hub, not to the CDN: its signed links need none
    assert gated_hub.stats["status_401"] == gated_hub.stats["status_403"] == 0


def test_unreachable_hub_keeps_a_complete_volume(tmp_path, hub):
    assert hf(tmp_path / "vol", hub).returncode == 0
    dead = f"http://127.0.0.1:{free_port()}"
    r = run_download(tmp_path / "vol", dead, "huggingface")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cannot reach Hugging Face" in r.stdout and "kept the local copy: 5 files" in r.stdout

    empty = run_download(tmp_path / "empty", dead, "huggingface")
    assert empty.returncode == 2
    line = verdict(empty)
    assert "cannot reach Hugging Face at http://127.0.0.1:" in line and "HF_ENDPOINT" in line
    assert "holds no complete download" in line

    # a complete volume that was damaged meanwhile is not served
    with open(tmp_path / "vol" / MODEL_ID / WEIGHTS, "r+b") as f:
        f.write(b"\0\0\0\0")
    bad = run_download(tmp_path / "vol", dead, "huggingface")
    assert bad.returncode == 2 and "local files are corrupt: model.safetensors" in verdict(bad)
    assert not (tmp_path / "vol" / MODEL_ID / manifest.NAME).exists()


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"MODEL_ID": "Qwen/Qwen3-8B-typo"}, "Qwen/Qwen3-8B-typo does not exist on Hugging Face"),
        ({"MODEL_REVISION": "master"}, "has no revision master on Hugging Face"),
        ({"not_found": True}, "Qwen/Qwen3-8B does not exist on Hugging Face"),
    ],
    ids=["unknown-repo", "unknown-revision", "not-found-fault"],
)
def test_unknown_repo_or_revision_names_the_setting(tmp_path, hub, env, needle):
    env = dict(env)
    if env.pop("not_found", False):
        hub.faults = Faults(not_found=True)  # the hub answers 401 RepoNotFound for the repo
    r = hf(tmp_path, hub, **env)
    assert r.returncode == 2
    line = verdict(r)
    assert needle in line and ("MODEL_ID" in line or "MODEL_REVISION" in line), line


def test_server_errors_on_a_file_are_retried(tmp_path, scripted_model, hub):
    hub.faults = Faults(server_errors=2, server_errors_match="resolve/")
    t0 = time.monotonic()
    r = hf(tmp_path, hub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert hub.stats["status_500"] == 2
    assert hashes(tmp_path / MODEL_ID) == hashes(scripted_model)
    print(f"\nHF 500 twice on a file's metadata: faults injected=2, retried by the client, "
          f"completed in {time.monotonic() - t0:.1f}s")  # fmt: skip


def test_server_errors_on_the_listing_say_try_later(tmp_path, hub):
    hub.faults = Faults(server_errors=1)
    r = hf(tmp_path, hub)
    assert r.returncode == 2
    line = verdict(r)
    assert "Hugging Face answered with server errors (500 for" in line and "try again" in line


def test_killed_run_is_completed_by_the_next(tmp_path, scripted_model, hub):
    """SIGKILL mid-file (as `docker compose kill`): nothing is marked complete, the next run
    removes the client's orphaned temporary file and completes the volume."""
    hub.faults = Faults(bytes_per_second=20_000_000)
    env = cpu_env(**hub_env(tmp_path, hub.url, "huggingface"))
    proc = subprocess.Popen([sys.executable, "-m", "scripts.download"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    parts = tmp_path / MODEL_ID / ".cache" / "huggingface" / "download"
    deadline = time.monotonic() + 120
    killed_at = 0
    while proc.poll() is None and time.monotonic() < deadline:
        got = sum(p.stat().st_size for p in parts.rglob("*.incomplete")) if parts.is_dir() else 0
        if got >= 10_000_000:
            proc.send_signal(signal.SIGKILL)
            killed_at = got
            break
        time.sleep(0.05)
    proc.wait()
    assert killed_at, "the download ended before it could be killed"
    with pytest.raises(manifest.NotReady):
        manifest.require_complete(tmp_path / MODEL_ID)
    hub.faults = Faults()
    sent_before = hub.stats["bytes_sent"]
    r = hf(tmp_path, hub)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"removed \d+ partial files \(.+\) of an interrupted run", r.stdout), r.stdout
    assert "of it on disk from an earlier run" not in r.stdout  # nothing was counted as resumed
    assert not list(parts.rglob("*.incomplete"))
    assert hashes(tmp_path / MODEL_ID) == hashes(scripted_model)
    print(f"\nHF killed at {killed_at / 1e6:.1f} MB: re-run fetched "
          f"{(hub.stats['bytes_sent'] - sent_before) / 1e6:.1f} MB (huggingface_hub 2.x restarts "
          "a file it did not finish in the same run)")  # fmt: skip


def test_progress_lines_count_the_clients_temporary_files(tmp_path, scripted_model, hub):
    hub.faults = Faults(bytes_per_second=15_000_000)
    r = hf(tmp_path, hub, DOWNLOAD_PROGRESS_INTERVAL="1")
    assert r.returncode == 0, r.stdout + r.stderr
    got = [float(m[1]) for m in re.finditer(r"files, ([\d.]+)/[\d.]+ MB", r.stdout)]
    print("\n" + r.stdout)
    assert len(got) >= 3 and got == sorted(got) and got[-1] > got[0], r.stdout
    assert f"now {WEIGHTS}" in r.stdout


def test_http_surface(scripted_model, hub):
    """The routes and headers huggingface_hub reads, spot-checked without the client."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(NoRedirect)

    def get(url, method="GET", headers=None):
        req = urllib.request.Request(url, method=method, headers=headers or {})
        try:
            with opener.open(req, timeout=10) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    status, _, body = get(f"{hub.url}/api/models/{MODEL_ID}/revision/main?blobs=true")
    info = json.loads(body)
    sib = {s["rfilename"]: s for s in info["siblings"]}
    data = (scripted_model / WEIGHTS).read_bytes()
    assert sib[WEIGHTS]["lfs"]["sha256"] == manifest.sha256_file(scripted_model / WEIGHTS)
    assert sib["config.json"]["blobId"] == git_blob_sha1(scripted_model / "config.json")
    assert "lfs" not in sib["config.json"] and re.fullmatch(r"[0-9a-f]{40}", info["sha"])

    status, headers, _ = get(f"{hub.url}/{MODEL_ID}/resolve/main/{WEIGHTS}", "HEAD")
    assert status == 302 and headers["X-Repo-Commit"] == info["sha"]
    assert headers["X-Linked-Size"] == str(len(data))
    assert headers["X-Linked-Etag"] == f'"{sib[WEIGHTS]["lfs"]["sha256"]}"'
    cdn = headers["Location"]
    assert cdn.startswith(f"http://localhost:{hub.port}/cdn/")  # another origin than the Hub
    status, headers, body = get(cdn, headers={"Range": "bytes=100-199"})
    assert (status, body, headers["Content-Range"]) == (
        206,
        data[100:200],
        f"bytes 100-199/{len(data)}",
    )
    assert get(cdn.replace("sig=", "sig=0"))[0] == 403

    status, headers, body = get(f"{hub.url}/{MODEL_ID}/resolve/main/config.json")
    assert status == 200 and body == (scripted_model / "config.json").read_bytes()
    assert headers["ETag"] == f'"{git_blob_sha1(body)}"'
    status, headers, _ = get(f"{hub.url}/{MODEL_ID}/resolve/main/nope.bin")
    assert (status, headers["X-Error-Code"]) == (404, "EntryNotFound")
    status, headers, _ = get(f"{hub.url}/{MODEL_ID}/resolve/master/config.json")
    assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")
    status, headers, _ = get(f"{hub.url}/api/models/Nobody/Missing")
    assert (status, headers["X-Error-Code"]) == (401, "RepoNotFound")

    hub.page_size = 2
    listed, url = [], f"{hub.url}/api/models/{MODEL_ID}/tree/main?recursive=true"
    while url:
        status, headers, body = get(url)
        listed += json.loads(body)
        m = re.match(r'<([^>]+)>; rel="next"', headers.get("Link") or "")
        url = m and m[1]
    assert sorted(e["path"] for e in listed) == sorted(p.name for p in scripted_model.iterdir())


def test_the_real_client_pages_through_the_tree(tmp_path, scripted_model, hub):
    hub.page_size = 2  # the Hub pages at 1000 entries; a small page tests the Link header
    r = hf(tmp_path, hub)
    assert r.returncode == 0, r.stdout + r.stderr
    tree_pages = [e for e in hub.log if "/tree/" in e["path"]]
    assert len(tree_pages) == 3 and hashes(tmp_path / MODEL_ID) == hashes(scripted_model)


def test_cli_serves_and_exits_on_sigterm(scripted_model):
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fixtures.fakehf", "--repo", f"{MODEL_ID}={scripted_model}",
         "--port", "0", "--gated", MODEL_ID, "--token", f"{TOKEN}={MODEL_ID}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=cpu_env(PYTHONUNBUFFERED="1"),
    )  # fmt: skip
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("fakehf listening on http://127.0.0.1:"), line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
