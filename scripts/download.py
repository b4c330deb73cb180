"""Fetch the model into the models volume, verify every file, and record it as complete.

    python -m scripts.download

ModelScope by default (as in the tutorial), Hugging Face with MODEL_SOURCE=huggingface. The
hub's file list gives each file's size and hash; local files that match are kept, anything
missing or different is (re-)fetched by the hub's own client, which resumes cut transfers.
Only after every file verifies is `.qvs-complete.json` written, and `serve` starts only then.
A complete volume is a fast no-op: one file list and one hashing pass. With the hub
unreachable, a complete volume is verified against its record and kept.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from scripts import manifest
from scripts.settings import Settings, SettingsError, load


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

    def _translate(self, e: Exception) -> Exception:
        return e

    def _call(self, fn, *args, **kwargs):
        """Call the hub client; its errors become one-line DownloadErrors where we know them."""
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise self._translate(e) from e

    def fetch(self, paths: list[str], target: Path) -> None:
        self._call(
            self.snapshot_download(),
            self.s.model_id,
            revision=self.s.model_revision,
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
        return os.environ.get("MODELSCOPE_ENDPOINT", "https://modelscope.cn")

    def _translate(self, e: Exception) -> Exception:
        import requests
        from modelscope_hub import errors

        status = getattr(getattr(e, "response", None), "status_code", None)
        if status == 404 or isinstance(e, errors.NotExistError):
            return DownloadError(
                f"{self.s.model_id} (revision {self.s.model_revision}) does not exist on "
                f"{self.name} ({self.endpoint}); check MODEL_ID and MODEL_REVISION in .env"
            )
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
                "nothing partial was kept, re-run to resume"
            )
        if isinstance(e, errors.ServerError):
            return DownloadError(f"{self.name} answered with server errors ({e}); try again later")
        return e

    def list_files(self) -> list[RemoteFile]:
        from modelscope_hub.api import HubApi

        files = self._call(
            HubApi().list_repo_files,
            self.s.model_id,
            "model",
            revision=self.s.model_revision,
            recursive=True,
        )
        return [RemoteFile(f.path, f.size, sha256=f.sha256) for f in files if not f.is_dir]


class HuggingFace(Hub):
    name = "Hugging Face"
    pattern_arg = "allow_patterns"

    @staticmethod
    def snapshot_download():
        from huggingface_hub import snapshot_download

        return snapshot_download

    @property
    def endpoint(self) -> str:
        return os.environ.get("HF_ENDPOINT", "https://huggingface.co")

    def _translate(self, e: Exception) -> Exception:
        import requests
        from huggingface_hub import errors

        if isinstance(e, (errors.RepositoryNotFoundError, errors.RevisionNotFoundError)):
            return DownloadError(
                f"{self.s.model_id} (revision {self.s.model_revision}) does not exist on "
                f"{self.name}; check MODEL_ID and MODEL_REVISION in .env (or set HF_TOKEN for "
                "gated repos)"
            )
        if isinstance(e, (requests.ConnectionError, requests.Timeout, OSError)):
            return HubUnreachable(
                f"cannot reach {self.name} at {self.endpoint} ({type(e).__name__}); check the "
                "network, set HF_ENDPOINT to a mirror, or MODEL_SOURCE=modelscope"
            )
        return e

    def list_files(self) -> list[RemoteFile]:
        from huggingface_hub import HfApi

        info = self._call(
            HfApi().model_info, self.s.model_id, revision=self.s.model_revision, files_metadata=True
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


SOURCES = {"modelscope": ModelScope, "huggingface": HuggingFace}


def gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


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
            f"{source.name} lists no files for {s.model_id} at revision {s.model_revision}; "
            "check MODEL_REVISION"
        )
    total = sum(rf.size for rf in remote)
    good, todo = check_local(target, remote)
    if not todo and manifest.read(target) is not None:
        return (
            f"{s.model_id}: all {len(remote)} files ({gb(total)}) verified in "
            f"{time.monotonic() - t0:.1f}s; nothing to download"
        )
    manifest.invalidate(target)
    if todo:
        need = sum(rf.size for rf in remote if rf.path in todo)
        print(
            f"download: {s.model_id}@{s.model_revision} from {source.name}: {len(todo)} of "
            f"{len(remote)} files to fetch ({gb(need)} of {gb(total)})",
            flush=True,
        )
        source.fetch(todo, target)
        fetched, still = check_local(target, [rf for rf in remote if rf.path in todo])
        if still:
            raise DownloadError(
                f"after the download these files are missing or fail verification: "
                f"{', '.join(still)}; re-run to fetch them again"
            )
        good.update(fetched)
    sizes = {rf.path: rf.size for rf in remote}
    manifest.write(
        target,
        {p: {"size": sizes[p], "sha256": h} for p, h in sorted(good.items())},
        model_id=s.model_id,
        revision=s.model_revision,
        source=s.model_source,
    )
    secs = time.monotonic() - t0
    return (
        f"{s.model_id}: {len(todo)} files fetched, {len(remote)} verified ({gb(total)}) "
        f"in {secs:.1f}s"
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
