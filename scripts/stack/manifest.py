"""The completeness record of a downloaded model: `.qvs-complete.json` in the model folder lists
every file with its size and sha256. `download` writes it only after every file verified against
the hub's hashes; `serve` refuses to start without it, so a partial or corrupt download is never
served.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

NAME = ".qvs-complete.json"
CHUNK = 8 << 20


class NotReady(RuntimeError):
    """The model folder is not a complete, verified download."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_many(paths: list[Path]) -> dict[Path, str]:
    """sha256 of each file, in parallel (hashlib releases the GIL on large buffers)."""
    workers = min(8, os.cpu_count() or 1, max(1, len(paths)))
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip(paths, pool.map(sha256_file, paths), strict=True))


def read(model_path: Path) -> dict | None:
    try:
        return json.loads((model_path / NAME).read_text())
    except (OSError, ValueError):
        return None


def write(model_path: Path, files: dict[str, dict], **meta) -> None:
    record = {"written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}
    record["files"] = files
    tmp = model_path / (NAME + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, model_path / NAME)


def invalidate(model_path: Path) -> None:
    (model_path / NAME).unlink(missing_ok=True)


def require_complete(model_path: Path) -> dict:
    """Cheap check before serving: the record exists and every file has its recorded size."""
    record = read(model_path)
    if record is None:
        raise NotReady(
            f"{model_path} has no completed download ({NAME} missing); run the download "
            "service first: `docker compose run --rm download` (or `python -m scripts.download`)"
        )
    for rel, meta in record["files"].items():
        path = model_path / rel
        try:
            size = path.stat().st_size
        except OSError:
            raise NotReady(f"{path} is missing; re-run the download to repair it") from None
        if size != meta["size"]:
            raise NotReady(
                f"{path} has {size} bytes, expected {meta['size']}; "
                "re-run the download to repair it"
            )
    return record
