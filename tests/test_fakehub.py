"""The fake ModelScope hub, exercised through the real ``modelscope==1.40.2`` client.

Every download goes through ``modelscope.snapshot_download`` with
``MODELSCOPE_ENDPOINT`` pointing at :class:`tests.fixtures.fakehub.FakeHub`; a
socket guard fails the test if anything but the fake hub is contacted (DNS included).
Run with ``-s`` to see the MB/s line.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.fixtures.fakehub import FakeHub

modelscope = pytest.importorskip("modelscope")
ms_download = pytest.importorskip("modelscope_hub._download")
ms_errors = pytest.importorskip("modelscope_hub.errors")
ms_config = pytest.importorskip("modelscope_hub.config")
ms_legacy = pytest.importorskip("modelscope_hub._legacy_api")
requests = pytest.importorskip("requests")

pytestmark = pytest.mark.unit

REPO_ID = "Qwen/Tiny-Test"
BIG = "model.safetensors"
BIG_SIZE = 6 * 1024 * 1024 + 12345  # not a multiple of the 1 MiB part size
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------
@pytest.fixture
def source(tmp_path: pathlib.Path) -> pathlib.Path:
    """A small model repo: two JSON files, one file in a subfolder, one 6 MiB blob."""
    root = tmp_path / "src"
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "qwen3", "hidden_size": 64}))
    (root / "generation_config.json").write_text(json.dumps({"temperature": 0.6}))
    (root / "tokenizer" / "vocab.txt").write_text("".join(f"tok{i}\n" for i in range(2000)))
    (root / BIG).write_bytes(random.Random(1234).randbytes(BIG_SIZE))
    return root


@pytest.fixture
def hub(source: pathlib.Path):
    with FakeHub({REPO_ID: source}) as running:
        yield running


@pytest.fixture
def client_env(hub: FakeHub, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
    """Point the real client at the fake hub, isolate its home/cache, forbid other hosts."""
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "ms-home"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in (
        "MODELSCOPE_DOMAIN",
        "MODELSCOPE_API_TOKEN",
        "MODELSCOPE_DOWNLOAD_INTRA_CLOUD_REGION",
    ):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    # HubConfig is a process-wide singleton that captures the environment once.
    monkeypatch.setattr(ms_config, "_default_config", None)
    # Progress bars only; keeps `pytest -s` output readable.
    monkeypatch.setattr(ms_download, "tqdm", functools.partial(ms_download.tqdm, disable=True))

    foreign: list[object] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def _allowed(address) -> bool:
        if isinstance(address, tuple):
            return address[0] in _LOCAL_HOSTS and address[1] == hub.port
        return True  # AF_UNIX and friends are not network

    def guarded_connect(sock, address):
        if not _allowed(address):
            foreign.append(address)
            raise OSError(f"test forbids network access to {address!r}")
        return real_connect(sock, address)

    def guarded_connect_ex(sock, address):
        if not _allowed(address):
            foreign.append(address)
            raise OSError(f"test forbids network access to {address!r}")
        return real_connect_ex(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in _LOCAL_HOSTS and host is not None:
            foreign.append(host)
            raise OSError(f"test forbids name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield hub
    assert foreign == [], f"the client tried to reach other hosts: {foreign}"


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: pathlib.Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under root."""
    return {
        p.relative_to(root).as_posix(): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def _download(**kwargs) -> pathlib.Path:
    return pathlib.Path(modelscope.snapshot_download(REPO_ID, revision="master", **kwargs))


def _file_gets(hub: FakeHub, rel: str) -> list[dict]:
    return [e for e in hub.log if e["file"] == rel]


# ---------------------------------------------------------------------------------------
# plain downloads
# ---------------------------------------------------------------------------------------
def test_snapshot_download_cache_dir_is_byte_identical(client_env, source, tmp_path):
    hub = client_env
    cache = tmp_path / "cache"
    began = time.perf_counter()
    out = _download(cache_dir=str(cache))
    elapsed = time.perf_counter() - began

    mb = hub.stats["bytes_sent"] / 1e6
    print(f"fakehub: {mb:.1f} MB in {elapsed:.2f}s = {mb / elapsed:.1f} MB/s")

    assert out == cache / "models" / "Qwen--Tiny-Test" / "snapshots" / "master"
    assert _tree(out) == _tree(source)
    assert hub.stats["files_served"] == 4
    assert hub.stats["bytes_sent"] == sum(
        p.stat().st_size for p in source.rglob("*") if p.is_file()
    )
    # The exact wire calls of modelscope 1.40.2: one listing, one region probe, one GET per file.
    assert hub.stats["by_path"] == {
        f"/api/v1/models/{REPO_ID}/repo/files": 1,
        "/api/v1/repos/internalAccelerationInfo": 1,
        f"/api/v1/models/{REPO_ID}/repo": 4,
    }
    # No marker files of the pre-1.38 SDK, no temp files; per-file locks live in cache_dir/.lock.
    names = {p.name for p in cache.rglob("*")}
    assert not names & {".msc", ".mdl", ".mv", "._____temp"}
    assert not [n for n in names if n.endswith((".incomplete", ".parallel_tmp"))]
    assert sorted(p.suffix for p in (cache / ".lock").iterdir()) == [".lock"] * 4


def test_snapshot_download_local_dir(client_env, source, tmp_path):
    hub = client_env
    target = tmp_path / "local"
    out = _download(local_dir=str(target))
    assert out == target
    assert _tree(target) == _tree(source)  # nothing but the repo files lands in local_dir
    # ...because the lock files go to MODELSCOPE_CACHE, not next to the model.
    assert len(list((tmp_path / "ms-cache" / ".lock").iterdir())) == 4
    assert hub.stats["files_served"] == 4


def test_second_run_rehashes_local_files_and_refetches_only_bad_ones(client_env, source, tmp_path):
    hub = client_env
    target = tmp_path / "local"
    _download(local_dir=str(target))
    served = hub.stats["files_served"]

    _download(local_dir=str(target))  # lists again, hashes every local file, fetches nothing
    assert hub.stats["files_served"] == served
    assert hub.stats["by_path"][f"/api/v1/models/{REPO_ID}/repo/files"] == 2

    # Same size, different bytes: only a full re-hash can notice.
    (target / "config.json").write_text(
        (source / "config.json").read_text().replace("qwen3", "QWEN3")
    )
    _download(local_dir=str(target))
    assert hub.stats["files_served"] == served + 1
    assert _file_gets(hub, "config.json")[-1]["status"] == 200
    assert _tree(target) == _tree(source)


# ---------------------------------------------------------------------------------------
# faults
# ---------------------------------------------------------------------------------------
def test_wrong_sha256_raises_integrity_error_and_leaves_no_bad_file(client_env, source, tmp_path):
    hub = client_env
    hub.faults.wrong_sha256 = True
    target = tmp_path / "local"
    with pytest.raises(ms_errors.FileDownloadError) as info:
        _download(local_dir=str(target))

    err = info.value
    # modelscope_hub.errors.FileDownloadError (E1003) wrapping one FileIntegrityError per file.
    assert type(err).__module__ == "modelscope_hub.errors"
    assert type(err).__name__ == "FileDownloadError"
    assert isinstance(err, ms_errors.HubError)
    # Not the legacy alias of the same name in modelscope.hub.errors (a NetworkError).
    from modelscope.hub import errors as legacy_errors

    assert not isinstance(err, legacy_errors.FileDownloadError)
    assert set(err.failed_files) == set(_tree(source))
    for exc in err.failed_files.values():
        assert type(exc) is ms_errors.FileIntegrityError
        assert str(exc).startswith("[E2020] Hash mismatch for ")
    assert f"4 of 4 file(s) failed to download from {REPO_ID}@master" in str(err)
    # Each file was fetched DOWNLOAD_HASH_RETRY_TIMES (3) times before the client gave up...
    for rel in _tree(source):
        assert len(_file_gets(hub, rel)) == ms_download.DOWNLOAD_HASH_RETRY_TIMES
    # ...and neither the file nor its .incomplete partial is left in the destination.
    assert [p for p in target.rglob("*") if p.is_file()] == []


def test_cut_transfer_is_resumed_with_range_in_the_same_call(client_env, source, tmp_path):
    hub = client_env
    hub.faults.cut_after_bytes = 1_500_000
    target = tmp_path / "local"
    out = _download(local_dir=str(target))

    assert _tree(out) == _tree(source)
    assert hub.stats["cuts"] == 1
    assert hub.faults.cut_times == 0
    first, second = _file_gets(hub, BIG)
    assert first["range"] is None and first["status"] == 200 and "completed_bytes" not in first
    assert second["status"] == 206
    start = int(second["range"].removeprefix("bytes=").removesuffix("-"))
    assert 0 < start <= 1_500_000
    assert start + second["completed_bytes"] == BIG_SIZE
    assert hub.stats["ranged_requests"] == 1
    assert not list(target.glob("*.incomplete"))


def test_partial_file_from_an_earlier_run_is_resumed(client_env, source, tmp_path):
    """A killed download leaves `<file>.incomplete` next to the target; the next call resumes."""
    hub = client_env
    target = tmp_path / "local"
    target.mkdir()
    head = 2 * 1024 * 1024
    (target / f"{BIG}.incomplete").write_bytes((source / BIG).read_bytes()[:head])
    _download(local_dir=str(target))
    (only,) = _file_gets(hub, BIG)
    assert only["range"] == f"bytes={head}-" and only["status"] == 206
    assert only["completed_bytes"] == BIG_SIZE - head
    assert _tree(target) == _tree(source)


def test_cut_in_parallel_range_mode_resumes_the_part(client_env, source, tmp_path, monkeypatch):
    """Parallel ranged download is off by default (MODELSCOPE_DOWNLOAD_PARALLEL_WORKERS=1,
    threshold 500 MB, parts of 160 MB; read at import), so the module constants are lowered."""
    hub = client_env
    mib = 1024 * 1024
    monkeypatch.setattr(ms_download, "DOWNLOAD_PARALLEL_THRESHOLD", mib)
    monkeypatch.setattr(ms_download, "DOWNLOAD_PARALLELS", 4)
    monkeypatch.setattr(ms_download, "DOWNLOAD_PART_SIZE", mib)
    hub.faults.cut_after_bytes = 300_000
    target = tmp_path / "local"
    _download(local_dir=str(target))

    assert _tree(target) == _tree(source)
    gets = _file_gets(hub, BIG)
    parts = -(-BIG_SIZE // mib)
    assert all(e["range"] and e["status"] == 206 for e in gets)
    assert len(gets) == parts + 1  # one part was cut and re-requested from where it stopped
    assert hub.stats["cuts"] == 1
    resumed = [e for e in gets if int(e["range"][6:].split("-")[0]) % mib]
    assert len(resumed) == 1 and resumed[0]["completed_bytes"] > 0
    leftovers = [p.name for p in target.iterdir() if p.name != BIG and p.name.startswith(BIG)]
    assert leftovers == []  # no model.safetensors_<start>_<end> parts, no .parallel_tmp


def test_unknown_repo_is_reported_as_http_404(client_env):
    hub = client_env
    with pytest.raises(requests.exceptions.HTTPError) as info:
        modelscope.snapshot_download("Nobody/No-Such-Model")
    err = info.value
    assert type(err.__cause__) is ms_errors.NotExistError
    assert err.response is not None and err.response.status_code == 404
    text = str(err)
    assert text.startswith("[E3020] [404] Model does not exist.")  # hub's 模型不存在, translated
    assert "Nobody/No-Such-Model" in text
    assert hub.stats["status_404"] == 1  # a 404 is not retried


def test_not_found_fault_makes_a_known_repo_404(client_env):
    hub = client_env
    hub.faults.not_found = True
    with pytest.raises(requests.exceptions.HTTPError, match=REPO_ID) as info:
        _download(cache_dir=None)
    assert info.value.response.status_code == 404
    assert hub.stats["files_served"] == 0


def test_two_server_errors_on_the_listing_are_retried(client_env, source, tmp_path):
    hub = client_env
    hub.faults.server_errors = 2
    began = time.perf_counter()
    out = _download(local_dir=str(tmp_path / "local"))
    elapsed = time.perf_counter() - began
    assert _tree(out) == _tree(source)
    assert hub.stats["status_500"] == 2
    listing = [e["status"] for e in hub.log if e["path"].endswith("/repo/files")]
    assert listing == [500, 500, 200]
    assert elapsed >= 3  # the listing retry waits 1 s, then 2 s


def test_listing_gives_up_with_server_error_after_its_attempts(client_env, tmp_path, monkeypatch):
    hub = client_env
    monkeypatch.setattr(ms_legacy, "REPO_TREE_PAGE_MAX_ATTEMPTS", 2)  # default 4: 1+2+4 s
    hub.faults.server_errors = 2
    with pytest.raises(ms_errors.ServerError) as info:
        _download(local_dir=str(tmp_path / "local"))
    assert info.value.status_code == 500
    assert hub.stats["status_500"] == 2 and hub.stats["files_served"] == 0


def test_server_errors_on_a_file_are_retried(client_env, source, tmp_path):
    hub = client_env
    hub.faults.server_errors = 2
    hub.faults.server_errors_match = f"FilePath={BIG}"
    target = tmp_path / "local"
    _download(local_dir=str(target))
    assert _tree(target) == _tree(source)
    assert [e["status"] for e in _file_gets(hub, BIG)] == [500, 500, 200]
    assert hub.stats["status_500"] == 2


def test_throttled_hub_is_slow_but_completes(client_env, source, tmp_path):
    hub = client_env
    rate = 4 * 1024 * 1024
    hub.faults.bytes_per_second = rate
    began = time.perf_counter()
    _download(local_dir=str(tmp_path / "local"))
    elapsed = time.perf_counter() - began
    # The throttle is per response and files download 4 at a time: the big file bounds it.
    assert elapsed >= BIG_SIZE / rate
    assert _tree(tmp_path / "local") == _tree(source)


# ---------------------------------------------------------------------------------------
# the HTTP surface itself (no client)
# ---------------------------------------------------------------------------------------
def _get(url: str, headers: dict | None = None, method: str = "GET"):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with opener.open(request, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_http_surface_ranges_head_and_listing(hub, source):
    data = (source / BIG).read_bytes()
    file_url = f"{hub.url}/api/v1/models/{REPO_ID}/repo?Revision=master&FilePath={BIG}"

    assert _get(f"{hub.url}/healthz")[0] == 200
    status, headers, body = _get(file_url, {"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (206, data[10:20], f"bytes 10-19/{BIG_SIZE}")
    status, headers, body = _get(file_url, {"Range": "bytes=-5"})
    assert (status, body) == (206, data[-5:])
    status, headers, _ = _get(file_url, {"Range": f"bytes={BIG_SIZE}-"})
    assert (status, headers["Content-Range"]) == (416, f"bytes */{BIG_SIZE}")
    status, headers, body = _get(file_url, method="HEAD")
    assert (status, body, int(headers["Content-Length"])) == (200, b"", BIG_SIZE)

    status, _, body = _get(
        f"{hub.url}/api/v1/models/{REPO_ID}/repo/files?Revision=master&Recursive=True"
    )
    listing = json.loads(body)
    assert status == 200 and listing["Code"] == 200 and listing["Success"] is True
    files = {f["Path"]: f for f in listing["Data"]["Files"]}
    assert files["tokenizer"]["Type"] == "tree"
    vocab = files["tokenizer/vocab.txt"]
    assert vocab["Type"] == "blob" and vocab["Name"] == "vocab.txt"
    assert vocab["Size"] == (source / "tokenizer" / "vocab.txt").stat().st_size
    assert vocab["Sha256"] == _sha256(source / "tokenizer" / "vocab.txt")

    status, _, body = _get(f"{hub.url}/api/v1/models/{REPO_ID}/repo/files?Recursive=False")
    assert sorted(f["Path"] for f in json.loads(body)["Data"]["Files"]) == sorted(
        ["config.json", "generation_config.json", "tokenizer", BIG]
    )
    status, _, body = _get(f"{hub.url}/api/v1/models/Nobody/Missing/repo/files")
    assert status == 404 and json.loads(body)["Success"] is False
    assert _get(f"{hub.url}/api/v1/models/{REPO_ID}/repo?FilePath=../etc/passwd")[0] == 400


def test_cli_serves_and_exits_cleanly_on_sigterm(source):
    command = [sys.executable, "-m", "tests.fixtures.fakehub", "--repo", f"{REPO_ID}={source}"]
    proc = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("fakehub listening on http://127.0.0.1:"), line
        url = line.rsplit(" ", 1)[1]
        assert _get(f"{url}/healthz")[0] == 200
        status, _, body = _get(f"{url}/api/v1/models/{REPO_ID}/repo?FilePath=config.json")
        assert status == 200 and body == (source / "config.json").read_bytes()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert proc.stderr.read() == ""  # quiet by default
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
