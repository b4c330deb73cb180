"""A track's lock (requirements/locks/TRACK.txt, written by docker/lock.sh) against wheel files.

    python3 docker/lockfile.py target LOCK
        the lock's interpreter and glibc: "3.12 2_39"
    python3 docker/lockfile.py select LOCK DIR --missing OUT [--verified CACHE]
        (docker/build-wheelhouse.sh, on the host) for each pin, the wheel in DIR that the lock's
        target would install (best tag, as pip ranks them), checked against the pin's sha256
        hashes; prints their names. Pins without one go to OUT as requirement lines with their
        hashes, for `pip download`; exit 3 then.
    python docker/lockfile.py check LOCK DIR [--track TRACK]
        (docker/install-python.sh, in the image) exit 1 naming every pin that DIR has no wheel
        for that this interpreter can install (the fix names TRACK: the lock's own by default;
        the track being built for the installer's lock, requirements/locks/uv.txt)
    python docker/lockfile.py pip-check LOCK
        `pip check`, where only what the track's overrides file leaves out may be reported
    python docker/lockfile.py prune LIST SITE_PACKAGES
        delete the files LIST names (globs, `# reason` after them); a glob matching nothing fails

Runs on the host's python3 and on each base image's (3.10 .. 3.12); `packaging` comes from pip.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

try:
    from pip._vendor.packaging import tags
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename
    from pip._vendor.packaging.version import Version
except ImportError:  # pragma: no cover - a pip without its vendored packaging
    from packaging import tags
    from packaging.utils import canonicalize_name, parse_wheel_filename
    from packaging.version import Version

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


class Pin:
    def __init__(self, name: str, version: str, hashes: list[str]):
        self.name, self.version, self.hashes = canonicalize_name(name), Version(version), hashes
        self.spec = f"{name}=={version}"

    def line(self) -> str:
        return " ".join([self.spec, *(f"--hash=sha256:{h}" for h in self.hashes)])


def read(lock: Path) -> tuple[dict[str, str], list[Pin]]:
    """The header's `# key: value` lines and the pins (hashes joined over continuation lines)."""
    meta: dict[str, str] = {}
    pins: list[Pin] = []
    text = lock.read_text()
    for line in text.splitlines():
        m = re.match(r"^# ([a-z-]+): (.+)$", line)
        if m:
            meta[m[1]] = m[2].strip()
    for logical in re.sub(r"\\\n", " ", text).splitlines():
        m = PIN.match(logical)
        if m:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", logical)
            if not hashes:
                sys.exit(f"lockfile: {lock}: {m[0]} has no sha256 hash; regenerate it: "
                         "bash docker/lock.sh")  # fmt: skip
            pins.append(Pin(m[1], m[2], hashes))
    if not pins:
        sys.exit(f"lockfile: {lock} pins nothing; regenerate it: bash docker/lock.sh")
    return meta, pins


def target_tags(python: str, glibc: str) -> list[tags.Tag]:
    """What pip on CPython `python` with glibc 2.`glibc` (x86_64) installs, best first."""
    major, minor = (int(x) for x in python.split("."))
    top = int(glibc.split("_")[1])
    plats = [f"manylinux_2_{v}_x86_64" for v in range(top, 4, -1)]
    plats += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64", "linux_x86_64"]
    version = (major, minor)
    return [*tags.cpython_tags(version, platforms=plats),
            *tags.compatible_tags(version, f"cp{major}{minor}", plats)]  # fmt: skip


def best_wheels(pins: list[Pin], folder: Path, ranked: list[tags.Tag]) -> dict[str, Path | None]:
    rank = {t: i for i, t in enumerate(ranked)}
    found: dict[tuple[str, Version], list[tuple[int, Path]]] = {}
    for f in folder.glob("*.whl"):
        try:
            name, version, _, wtags = parse_wheel_filename(f.name)
        except Exception:  # noqa: BLE001 - not a wheel name pip would take either
            continue
        best = min((rank[t] for t in wtags if t in rank), default=None)
        if best is not None:
            found.setdefault((name, version), []).append((best, f))
    return {p.spec: min(found[(p.name, p.version)])[1] if (p.name, p.version) in found else None
            for p in pins}  # fmt: skip


def sha256(path: Path, cache: dict) -> str:
    st = path.stat()
    key = f"{path.name}|{st.st_size}|{st.st_mtime_ns}"
    if key not in cache:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        cache[key] = h.hexdigest()
    return cache[key]


def cmd_select(lock: Path, folder: Path, missing_out: Path, verified: Path | None) -> int:
    meta, pins = read(lock)
    python, platform = meta["python-version"], meta["python-platform"]
    glibc = platform.removeprefix("x86_64-manylinux_")
    chosen = best_wheels(pins, folder, target_tags(python, glibc))
    cache = {}
    if verified and verified.exists():
        cache = json.loads(verified.read_text())
    missing, bad = [], []
    for p in pins:
        f = chosen[p.spec]
        if f is None:
            missing.append(p.line())
        elif sha256(f, cache) not in p.hashes:
            bad.append(f"{f} (for {p.spec})")
    if verified:
        verified.write_text(json.dumps(cache))
    if bad:
        sys.exit(f"lockfile: these files do not match the lock's hashes; delete them: {bad}")
    if missing:
        missing_out.write_text("\n".join(missing) + "\n")
        return 3
    print("\n".join(chosen[p.spec].name for p in pins))
    return 0


def cmd_check(lock: Path, folder: Path, track: str | None = None) -> int:
    _, pins = read(lock)
    chosen = best_wheels(pins, folder, list(tags.sys_tags()))
    lacking = [spec for spec, f in chosen.items() if f is None]
    if not lacking:
        print(f"{folder}: a wheel for each of the {len(pins)} pins of {lock.name}")
        return 0
    track = track or lock.stem
    more = len(lacking) - 12
    shown = ", ".join(lacking[:12]) + (f" and {more} more" if more > 0 else "")
    print(f"{folder} has no wheel this Python ({sys.version.split()[0]}) can install for "
          f"{len(lacking)} of the {len(pins)} pins of requirements/locks/{lock.name}: {shown}; "
          f"fix: bash docker/build-wheelhouse.sh {track}", file=sys.stderr)  # fmt: skip
    return 1


def override_names(lock: Path, meta: dict[str, str]) -> set[str]:
    """The packages the track's overrides file names (its pins are allowed to differ)."""
    names = set()
    for item in meta.get("inputs", "").split(", "):
        if "overrides-" in item:
            path = lock.parent.parent / Path(item).name
            for line in path.read_text().splitlines():
                m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)", line)
                if m:
                    names.add(canonicalize_name(m[1]))
    return names


def cmd_pip_check(lock: Path) -> int:
    meta, _ = read(lock)
    allowed = override_names(lock, meta)
    r = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})  # fmt: skip
    expected, other = [], []
    for line in r.stdout.splitlines():
        m = re.search(r"requires ([A-Za-z0-9._-]+), which is not installed", line) or re.search(
            r"has requirement ([A-Za-z0-9._-]+)", line
        )
        (expected if m and canonicalize_name(m[1]) in allowed else other).append(line)
    for line in expected:
        print(f"pip check: {line} (expected: requirements/overrides-{lock.stem}.txt)")
    if other or (r.returncode != 0 and not expected):
        print("pip check failed:\n" + "\n".join(other or [r.stdout + r.stderr]), file=sys.stderr)
        return 1
    print(f"pip check: no broken requirements{' besides those above' if expected else ''}")
    return 0


def cmd_prune(listing: Path, site: Path) -> int:
    total, stale = 0, []
    for n, line in enumerate(listing.read_text().splitlines(), 1):
        pattern = line.split("#", 1)[0].strip()
        if not pattern:
            continue
        hits = [p for p in site.glob(pattern) if p.is_file() or p.is_symlink()]
        if not hits:
            stale.append(f"{listing.name}:{n}: {pattern!r}")
        for p in hits:
            size = p.lstat().st_size
            p.unlink()
            total += size
            print(f"pruned {p.relative_to(site)} ({size / 1e6:.0f} MB)")
    if stale:
        print(f"lockfile: nothing in {site} matches {', '.join(stale)}; the list is stale: "
              f"remove or fix those lines in requirements/{listing.name}",
              file=sys.stderr)  # fmt: skip
        return 1
    print(f"pruned {total / 1e6:.0f} MB ({listing.name})")
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="lockfile.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("target").add_argument("lock", type=Path)
    sel = sub.add_parser("select")
    sel.add_argument("lock", type=Path)
    sel.add_argument("dir", type=Path)
    sel.add_argument("--missing", type=Path, required=True)
    sel.add_argument("--verified", type=Path)
    chk = sub.add_parser("check")
    chk.add_argument("lock", type=Path)
    chk.add_argument("dir", type=Path)
    chk.add_argument("--track")
    sub.add_parser("pip-check").add_argument("lock", type=Path)
    prn = sub.add_parser("prune")
    prn.add_argument("listing", type=Path)
    prn.add_argument("site", type=Path)
    a = ap.parse_args(argv)
    if a.cmd == "target":
        meta, _ = read(a.lock)
        print(meta["python-version"], meta["python-platform"].removeprefix("x86_64-manylinux_"))
        return 0
    if a.cmd == "select":
        return cmd_select(a.lock, a.dir, a.missing, a.verified)
    if a.cmd == "check":
        return cmd_check(a.lock, a.dir, a.track)
    if a.cmd == "prune":
        return cmd_prune(a.listing, a.site)
    return cmd_pip_check(a.lock)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
