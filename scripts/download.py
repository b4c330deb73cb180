"""Fetch the model into the models volume, verify every file, and record it as complete.

    python -m scripts.download

ModelScope by default (as in the tutorial), Hugging Face with MODEL_SOURCE=huggingface. The
hub's file list gives each file's size and hash; local files that match are kept, anything
missing or different is (re-)fetched by the hub's own client, which resumes cut transfers.
Only after every file verifies is `.qvs-complete.json` written, and `serve` starts only then.
A complete volume is a fast no-op: one file list and one hashing pass. With the hub
unreachable, a complete volume is verified against its record and kept.

Before fetching, the free space of the models volume is checked against what is still to fetch.
The clients' own progress bars are off (they are `\r` noise in `docker compose` logs); instead,
every DOWNLOAD_PROGRESS_INTERVAL seconds one line reports files, bytes, rate and ETA, measured
from the bytes on disk, and a summary line ends the run. Sizes are decimal: 1 MB = 10^6 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
import shutil
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from scripts.stack import manifest
from scripts.stack.settings import DEFAULT_REVISIONS, Settings, SettingsError, load


class DownloadError(RuntimeError):
    """A failure with a one-line explanation and the fix."""


class HubUnreachable(DownloadError):
    pass


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None = None  # ModelScope lists it for every file, Hugging Face for LFS files
    git_sha1: str | None = None  # Hugging Face's blob id for small (non-LFS) files


def git_blob_sha1(path: Path) -> str:
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while chunk := f.read(manifest.CHUNK):
            h.update(chunk)
    return h.hexdigest()


def matches(local: Path, rf: RemoteFile, sha256: str | None) -> bool:
    if rf.sha256:
        return sha256 == rf.sha256
    if rf.git_sha1:
        return git_blob_sha1(local) == rf.git_sha1
    return local.stat().st_size == rf.size


class Hub:
    """One model hub: list the repo's files with their hashes, fetch some of them."""

    name = ""
    pattern_arg = ""  # the snapshot_download argument that limits it to some files

    def __init__(self, s: Settings):
        self.s = s
        # The clients draw tqdm bars: one line per tick (or `\r` and escape codes) in compose
        # logs. Progress comes from `Progress` instead. tqdm reads TQDM_* overrides when it is
        # first imported (tqdm.utils.envwrap), so this must happen before the client imports.
        os.environ["TQDM_DISABLE"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

    def _translate(self, e: Exception) -> Exception:
        return e

    def missing(self, fix: str) -> DownloadError:
        """The repo or revision does not exist: say which repo, and where it came from."""
        s = self.s
        via = f"SERVE_PROFILE={s.profile}'s checkpoint of MODEL_ID={s.model_id}, "
        why = via if s.checkpoint_id != s.model_id else ""
        more = ", or SERVE_PROFILE=default" if why else ""
        return DownloadError(
            f"{s.checkpoint_id} ({why}revision {s.revision}) does not exist on "
            f"{self.name}{fix}; check MODEL_ID and MODEL_REVISION in .env{more}"
        )

    def _call(self, fn, *args, **kwargs):
        """Call the hub client; its errors become one-line DownloadErrors where we know them."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise self._translate(e) from e

    def prepare(self, target: Path) -> None:
        """Before fetching: tidy what an interrupted run of this hub's client left behind."""

    def fetch(self, paths: list[str], target: Path) -> None:
        self._call(
            self.snapshot_download(),
            self.s.checkpoint_id,
            revision=self.s.revision,
            local_dir=str(target),
            **{self.pattern_arg: paths},
        )


class ModelScope(Hub):
    name = "ModelScope"
    pattern_arg = "allow_file_pattern"

    def __init__(self, s: Settings):
        super().__init__(s)
        os.environ.setdefault("MODELSCOPE_CACHE", str(s.models_dir / ".modelscope"))

    @staticmethod
    def snapshot_download():
        from modelscope import snapshot_download

        return snapshot_download

    @property
    def endpoint(self) -> str:
        return os.environ.get("MODELSCOPE_ENDPOINT") or "https://www.modelscope.cn"

    def _translate(self, e: Exception) -> Exception:
        import requests
        from modelscope_hub import errors

        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 404 or isinstance(e, errors.NotExistError):
            return self.missing(f" ({self.endpoint})")
        if isinstance(e, (errors.NetworkError, requests.ConnectionError, requests.Timeout)):
            return HubUnreachable(
                f"cannot reach {self.name} at {self.endpoint} ({type(e).__name__}); check the "
                "network or proxy, set MODELSCOPE_ENDPOINT to a mirror, or MODEL_SOURCE=huggingface"
            )
        if isinstance(e, errors.FileDownloadError):
            failed = getattr(e, "failed_files", None) or {}
            names = ", ".join(sorted(failed)) or str(e).splitlines()[0]
            return DownloadError(
                f"{self.name} transfer or integrity check failed after retries for: {names}; "
                "the volume is not marked complete, re-run to resume"
            )
        if isinstance(e, errors.ServerError):
            return DownloadError(f"{self.name} answered with server errors ({e}); try again later")
        return e

    def list_files(self) -> list[RemoteFile]:
        from modelscope_hub.api import HubApi

        files = self._call(
            HubApi().list_repo_files,
            self.s.checkpoint_id,
            "model",
            revision=self.s.revision,
            recursive=True,
        )
        return [RemoteFile(f.path, f.size, sha256=f.sha256) for f in files if not f.is_dir]


class HuggingFace(Hub):
    name = "Hugging Face"
    pattern_arg = "allow_patterns"
    default_branch = DEFAULT_REVISIONS["huggingface"]

    @staticmethod
    def snapshot_download():
        from huggingface_hub import snapshot_download

        return snapshot_download

    @property
    def endpoint(self) -> str:
        return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"

    def _translate(self, e: Exception) -> Exception:
        """huggingface_hub's errors (its HTTP client is httpx2) as one line with the fix."""
        import httpx2
        from huggingface_hub import errors

        repo, rev = self.s.checkpoint_id, self.s.revision
        url = f"{self.endpoint}/{repo}"
        status = getattr(getattr(e, "response", None), "status_code", None)
        cause = e.__cause__ or e.__context__
        if isinstance(e, errors.GatedRepoError):  # before RepositoryNotFoundError, its base
            if status == 403:
                return DownloadError(
                    f"{repo} is gated on {self.name} and the account of HF_TOKEN has not been "
                    f"granted access (403); request access at {url}, or use MODEL_SOURCE=modelscope"
                )
            return DownloadError(
                f"{repo} is gated on {self.name}: its files need a token ({status or 401}); "
                f"accept its terms at {url} and set HF_TOKEN in .env to a token of that account"
            )
        if isinstance(e, errors.RevisionNotFoundError):
            return DownloadError(
                f"{repo} has no revision {rev} on {self.name} ({self.endpoint}); check "
                f"MODEL_REVISION in .env (empty: the default branch, {self.default_branch})"
            )
        if isinstance(e, errors.RepositoryNotFoundError):
            return DownloadError(
                f"{repo} does not exist on {self.name} ({self.endpoint}), or it is private; check "
                "MODEL_ID in .env (a private repo needs HF_TOKEN)"
            )
        if isinstance(e, errors.HfHubHTTPError) and status == 401:
            return DownloadError(
                f"{self.name} ({self.endpoint}) refuses HF_TOKEN (401 invalid credentials); fix "
                "HF_TOKEN in .env, or empty it for public repos"
            )
        if isinstance(e, errors.HfHubHTTPError) and status is not None and status >= 500:
            return DownloadError(
                f"{self.name} answered with server errors ({status} for {e.response.url}); "
                "try again later; nothing downloaded so far is lost"
            )
        if isinstance(e, (httpx2.TransportError, errors.OfflineModeIsEnabled)) or (
            isinstance(e, errors.LocalEntryNotFoundError)
            and isinstance(cause, (httpx2.TransportError, errors.OfflineModeIsEnabled))
        ):
            why = type(cause if isinstance(e, errors.LocalEntryNotFoundError) else e).__name__
            if isinstance(e, httpx2.RemoteProtocolError):  # cut again and again, no progress
                return DownloadError(
                    f"{self.name} transfers kept breaking off ({why}) after the client's retries; "
                    "the volume is not marked complete, re-run to fetch the rest"
                )
            return HubUnreachable(
                f"cannot reach {self.name} at {self.endpoint} ({why}); check the network or "
                "proxy, set HF_ENDPOINT to a mirror, or MODEL_SOURCE=modelscope"
            )
        if isinstance(e, OSError) and "Consistency check failed" in str(e):
            return DownloadError(
                f"{self.name} sent a file of the wrong size ({str(e).splitlines()[0]}); the "
                "volume is not marked complete, re-run to fetch it again"
            )
        return e

    def list_files(self) -> list[RemoteFile]:
        from huggingface_hub import HfApi

        info = self._call(
            HfApi().model_info, self.s.checkpoint_id, revision=self.s.revision, files_metadata=True
        )
        out = []
        for f in info.siblings or []:
            lfs = f.lfs
            out.append(
                RemoteFile(
                    f.rfilename,
                    f.size or (lfs.size if lfs else 0),
                    sha256=lfs.sha256 if lfs else None,
                    git_sha1=None if lfs else f.blob_id,
                )
            )
        return out

    def prepare(self, target: Path) -> None:
        """huggingface_hub (2.x) downloads each file into a temporary file of its own process
        (`<hash>.<etag>.<random>.incomplete`) and deletes it when a transfer fails; it resumes a
        cut transfer only within the same run. A killed run leaves its temporary files behind and
        no later run reads them: remove them (and never count them as progress)."""
        folder = target / ".cache" / "huggingface" / "download"
        stale = [p for p in folder.rglob("*.incomplete") if p.is_file()] if folder.is_dir() else []
        if stale:
            size = sum(_size(p) for p in stale)
            for p in stale:
                p.unlink(missing_ok=True)
            print(
                f"download: removed {len(stale)} partial files ({human(size)}) of an interrupted "
                f"run: {self.name}'s client restarts those files",
                flush=True,
            )


SOURCES = {"modelscope": ModelScope, "huggingface": HuggingFace}


MARGIN = 1.05  # free space wanted on top of the bytes still to fetch


def _unit(n: float) -> tuple[float, str]:
    for div, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(n) >= div:
            return div, name
    return 1, "B"


def human(n: float) -> str:
    """Decimal units, as disks are sold: 1 MB = 10^6 bytes, 1 GB = 10^9 bytes."""
    div, name = _unit(n)
    return f"{n:.0f} B" if div == 1 else f"{n / div:.1f} {name}"


def of(done: float, total: float) -> str:
    """`7.9/16.4 GB`: both in the unit of the total."""
    div, name = _unit(total)
    if div == 1:
        return f"{done:.0f}/{total:.0f} B"
    return f"{done / div:.1f}/{total / div:.1f} {name}"


def duration(secs: float) -> str:
    secs = round(secs)
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m{secs % 60:02d}s"
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m"


def free_space(path: Path) -> int:
    """Bytes this process may still write to the filesystem holding `path`."""
    return shutil.disk_usage(path).free


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # not there (yet), or renamed under us
        return 0


def _hf_short_hash(name: str) -> str:
    """huggingface_hub._local_folder._short_hash of the file's `.metadata` name."""
    return base64.urlsafe_b64encode(hashlib.sha1(f"{name}.metadata".encode()).digest()).decode()


def partial_bytes(target: Path, rel: str) -> int:
    """Bytes of `rel` that a hub client holds in its temporary files under `target`.

    ModelScope (modelscope_hub._download) streams into `<file>.incomplete` next to the file, or,
    for files over MODELSCOPE_DOWNLOAD_PARALLEL_THRESHOLD_MB with parallel workers, into parts
    `<file>_<start>_<end>` merged into `<file>.parallel_tmp`. Hugging Face (huggingface_hub with
    local_dir) streams into `.cache/huggingface/download/<dir>/<hash>.<etag>.<random>.incomplete`,
    a file of its own run (`HuggingFace.prepare`). Both rename the finished file to its name.
    """
    final = target / rel
    name = final.name
    total = _size(final.with_name(name + ".incomplete"))
    part = re.compile(re.escape(name) + r"(_\d+_\d+|\.parallel_tmp)")
    hf_dir = target / ".cache" / "huggingface" / "download" / Path(rel).parent
    hf_prefix = _hf_short_hash(name) + "."
    for folder, keep in (
        (final.parent, lambda n: part.fullmatch(n)),
        (hf_dir, lambda n: n.startswith(hf_prefix) and n.endswith(".incomplete")),
    ):
        try:
            names = [e.name for e in os.scandir(folder) if keep(e.name)]
        except OSError:
            continue
        total += sum(_size(folder / n) for n in names)
    return total


def on_disk(target: Path, rf: RemoteFile) -> tuple[int, bool]:
    """(bytes of `rf` on disk, whether it is finished). The partial files are read first: a
    rename to the final name between the two looks finished, never empty."""
    partial = partial_bytes(target, rf.path)
    if partial:
        return min(partial, rf.size), False
    final = target / rf.path
    if final.is_file() and _size(final) == rf.size:
        return rf.size, True
    return 0, False  # not started, or an old copy of another size that will be replaced


class Progress:
    """Every `interval` seconds, one flushed line about the files being fetched, measured on
    disk (so it works for any client and needs no hook into it):

    download: 2/5 files, 7.9/16.4 GB (48%), 412.0 MB/s, ETA 21s; now model-00003... 1.1/3.9 GB

    The rate is over the last 3 intervals; bytes that were on disk before are not counted in it.
    """

    def __init__(self, target: Path, files: list[RemoteFile], interval: float, out=None):
        self.target = target
        self.files = files
        self.interval = interval
        self.out = out if out is not None else sys.stdout
        self.total = sum(rf.size for rf in files)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.start_bytes = self.measure()[1]
        self._samples: deque[tuple[float, int]] = deque([(time.monotonic(), self.start_bytes)])

    def measure(self) -> tuple[int, int, list[tuple[str, int, int]]]:
        """(finished files, bytes on disk, [(path, bytes, size) of files in flight])."""
        done = got = 0
        flight = []
        for rf in self.files:
            n, finished = on_disk(self.target, rf)
            done += finished
            got += n
            if n and not finished:
                flight.append((rf.path, n, rf.size))
        return done, got, flight

    def line(self) -> str:
        now = time.monotonic()
        done, got, flight = self.measure()
        samples = self._samples
        samples.append((now, got))
        while len(samples) > 2 and samples[1][0] <= now - 3 * self.interval:
            samples.popleft()
        t0, b0 = samples[0]
        rate = max(0.0, (got - b0) / (now - t0)) if now > t0 else 0.0
        pct = 100 * got // self.total if self.total else 100
        eta = duration(math.ceil((self.total - got) / rate)) if rate > 0 else "--"
        text = (
            f"download: {done}/{len(self.files)} files, {of(got, self.total)} ({pct}%), "
            f"{human(rate)}/s, ETA {eta}"
        )
        if flight:
            shown = ", ".join(
                f"{p} {of(n, size)}" if n < size else f"{p} {human(size)} (verifying)"
                for p, n, size in flight[:3]
            )
            more = f" and {len(flight) - 3} more" if len(flight) > 3 else ""
            text += f"; now {shown}{more}"
        return text

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                print(self.line(), file=self.out, flush=True)
        except Exception as e:  # progress must never break the download itself
            print(f"download: progress lines stopped ({e!r})", file=self.out, flush=True)

    def __enter__(self) -> Progress:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def check_local(target: Path, remote: list[RemoteFile]) -> tuple[dict[str, str], list[str]]:
    """Hash the local copies; return (good path -> sha256, paths to fetch). Bad copies are
    removed so the hub client fetches them whole."""
    present = [
        rf for rf in remote if (target / rf.path).is_file()
        and (target / rf.path).stat().st_size == rf.size
    ]  # fmt: skip
    hashes = manifest.hash_many([target / rf.path for rf in present])
    good: dict[str, str] = {}
    for rf in present:
        digest = hashes[target / rf.path]
        if matches(target / rf.path, rf, digest):
            good[rf.path] = digest
        else:
            print(f"download: {rf.path} differs from the hub's hash; fetching it again", flush=True)
            (target / rf.path).unlink()
    return good, [rf.path for rf in remote if rf.path not in good]


def offline_verify(target: Path, reason: HubUnreachable) -> str:
    """The hub is unreachable: a complete, intact volume is still good to serve."""
    record = manifest.read(target)
    if record is None:
        raise DownloadError(f"{reason}; and {target} holds no complete download to fall back on")
    files = record["files"]
    paths = [target / rel for rel in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        manifest.invalidate(target)
        raise DownloadError(f"{reason}; and local files are missing: {', '.join(missing)}")
    hashes = manifest.hash_many(paths)
    bad = [rel for rel, meta in files.items() if hashes[target / rel] != meta["sha256"]]
    if bad:
        manifest.invalidate(target)
        raise DownloadError(f"{reason}; and local files are corrupt: {', '.join(bad)}")
    return f"{reason.args[0].split(';')[0]}; kept the local copy: {len(files)} files verified"


def run(s: Settings) -> str:
    source = SOURCES[s.model_source](s)
    target = s.model_path
    target.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        remote = source.list_files()
    except HubUnreachable as e:
        return offline_verify(target, e)
    if not remote:
        raise DownloadError(
            f"{source.name} lists no files for {s.checkpoint_id} at revision {s.revision}; "
            "check MODEL_REVISION"
        )
    total = sum(rf.size for rf in remote)
    source.prepare(target)
    good, todo = check_local(target, remote)
    if not todo and manifest.read(target) is not None:
        return (
            f"{s.checkpoint_id}: all {len(remote)} files ({human(total)}) verified in "
            f"{time.monotonic() - t0:.1f}s; nothing to download"
        )
    manifest.invalidate(target)
    sizes = {rf.path: rf.size for rf in remote}
    kept = sum(sizes[p] for p in good)
    fetched_bytes, fetch_secs = 0, 0.0
    if todo:
        files = [rf for rf in remote if rf.path in todo]
        progress = Progress(target, files, s.download_progress_interval)
        need, resumed = progress.total, progress.start_bytes
        check_space(target, need - resumed)
        every = s.download_progress_interval
        earlier = f", {human(resumed)} of it on disk from an earlier run" if resumed else ""
        print(
            f"download: {s.checkpoint_id}@{s.revision} from {source.name}: {len(todo)} of "
            f"{len(remote)} files to fetch ({human(need)} of {human(total)}{earlier}; "
            f"1 MB = 10^6 bytes)" + (f"; progress every {every}s" if every else ""),
            flush=True,
        )
        t1 = time.monotonic()
        with progress:
            source.fetch(todo, target)
        fetch_secs = time.monotonic() - t1
        fetched_bytes = need - resumed
        fetched, still = check_local(target, files)
        if still:
            raise DownloadError(
                f"after the download these files are missing or fail verification: "
                f"{', '.join(still)}; re-run to fetch them again"
            )
        good.update(fetched)
    manifest.write(
        target,
        {p: {"size": sizes[p], "sha256": h} for p, h in sorted(good.items())},
        model_id=s.checkpoint_id,
        revision=s.revision,
        source=s.model_source,
    )
    secs = time.monotonic() - t0
    rate = fetched_bytes / fetch_secs if fetch_secs else 0.0
    return (
        f"{s.checkpoint_id}: {len(todo)} files fetched, {len(remote)} verified, {human(total)} "
        f"({total} bytes); fetched {human(fetched_bytes)} in {fetch_secs:.1f}s "
        f"({human(rate)}/s average), kept {len(remote) - len(todo)} files ({human(kept)}); "
        f"done in {secs:.1f}s"
    )


def check_space(target: Path, remaining: int) -> None:
    """Fail before fetching anything when the volume cannot hold what is still to come."""
    need = int(remaining * MARGIN)
    free = free_space(target)
    if need > free:
        raise DownloadError(
            f"not enough space in {target}: need {human(need)} ({human(remaining)} to fetch + "
            f"{round((MARGIN - 1) * 100)}%), {human(free)} free; fix: free space on the Docker "
            "host or move Docker's data-root (doctor checks this)"
        )


def main(argv: list[str] | None = None) -> int:
    try:
        s = load()
        print(f"download: {run(s)}", flush=True)
    except (SettingsError, DownloadError) as e:
        print(f"download: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:
        print(
            f"download: cannot write {e.filename}: the models volume is not writable by this user "
            f"(uid {os.getuid()}); fix with `docker compose run --rm --user 0 download chown -R "
            f"{os.getuid()} /models` or recreate the volume",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
