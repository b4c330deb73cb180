"""Pin every upstream image of the GPU stack by digest, and refresh the pins.

    python3 -m scripts.pin_images              # resolve each name:tag, rewrite the pins in place
    python3 -m scripts.pin_images --dry-run    # print what would change; write nothing
    python3 -m scripts.pin_images --check      # CI: exit 1 when a pin is missing or stale

Runs on the host with plain python3 (stdlib only) and needs the network: it asks each image's
registry what its tag points to now. Hosts without a route to the registries (air-gapped
machines, this project's offline test runners) get exit status 2 and one line per image.

Where it looks (the GPU files; compose.cpu.yaml builds its images locally):
  compose.yaml   `image: X`, `image: ${VAR:-X}` and any `${..._IMAGE:-X}` (the BASE_IMAGE
                 build argument)
  Dockerfile     `ARG ..._IMAGE=X`, `FROM X` (not `FROM ${VAR}` nor an earlier stage) and
                 `COPY --from=X`
  .env.example   `..._IMAGE=X` and the commented alternatives `# ..._IMAGE=X`
  scripts/stack/settings.py   quoted references on lines ending `pinned image` (the settings
                 registry's TRACK_IMAGES, GATEWAY_IMAGE; .env.example is generated from it)
Images built here (names starting `qwen3-vllm-stack`) are skipped. Other files may be named as
arguments (paths relative to --root); their kind comes from the name (compose*.y[a]ml,
Dockerfile*, .env*).

How: the Registry HTTP API v2 (the OCI distribution spec). For `name:tag` it sends
`HEAD /v2/<repo>/manifests/<tag>` accepting the OCI image index, the Docker manifest list, the
OCI image manifest and the Docker v2 manifest, and takes the `Docker-Content-Digest` header
(without one: GET the manifest and take the sha256 of its bytes). For a multi-arch image that is
the digest of the index, the one `docker buildx imagetools inspect` shows as Digest and the one
that pulls on every platform. Anonymous bearer tokens come from wherever the registry's 401
`WWW-Authenticate: Bearer realm=...,service=...,scope=...` points (auth.docker.io for Docker
Hub, nvcr.io/proxy_auth for NGC, ghcr.io/token, quay.io/v2/auth). Docker Hub images live on
registry-1.docker.io, official ones under `library/`.

Each reference becomes `name:tag@sha256:<digest>`; the rest of the line stays byte-identical.
All lookups happen before anything is written; then every changed file is written to a
temporary file beside it and renamed over it, so a failure leaves the files as they were.

Exit status: 0 done (with --check: every pin present and current), 1 (--check only) a pin is
missing or stale, 2 an error (registry unreachable, tag unknown, unreadable file, usage).

PIN_IMAGES_REGISTRY_MAP="docker.io=http://127.0.0.1:5000,nvcr.io=http://127.0.0.1:5001" sends a
registry host's requests to another base URL (tests, mirrors that speak the same API);
PIN_IMAGES_TIMEOUT sets the per-request timeout in seconds (default 30).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = ("compose.yaml", "Dockerfile", ".env.example", "scripts/stack/settings.py")
LOCAL_PREFIX = "qwen3-vllm-stack"

DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
DOCKER_HUB_URL = "https://registry-1.docker.io"

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
USER_AGENT = "qwen3-vllm-stack-pin-images/1"

DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")
# a quoted image reference on a line marked `pinned image` (scripts/stack/settings.py's registry)
PYTHON_IMAGE = re.compile(r'"(?P<ref>[a-z0-9][\w./-]*:[\w.-]+(?:@sha256:[0-9a-f]{64})?)"')
# One image reference as written: stops at whitespace, quotes, `}` and `#`.
TOKEN = r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*"
NAME_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
HOST_RE = re.compile(r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# `${NAME:-X}` / `${NAME-X}` where NAME names an image.
VAR_DEFAULT = re.compile(r"\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*IMAGE):?-['\"]?(?P<ref>" + TOKEN + ")")
COMPOSE_IMAGE = re.compile(
    r"^\s*(?:-\s+)?image:\s*['\"]?(?:\$\{[A-Za-z_][A-Za-z0-9_]*:?-['\"]?)?(?P<ref>" + TOKEN + ")"
)
DOCKERFILE_ARG = re.compile(
    r"^\s*ARG\s+[A-Za-z_][A-Za-z0-9_]*IMAGE\s*=\s*['\"]?(?P<ref>" + TOKEN + ")", re.IGNORECASE
)
DOCKERFILE_FROM = re.compile(
    r"^\s*FROM\s+(?:--platform=\S+\s+)?(?P<ref>" + TOKEN + r")(?P<rest>\S*)"
    r"(?:\s+AS\s+(?P<stage>\S+))?",
    re.IGNORECASE,
)
DOCKERFILE_STAGE = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?\S+\s+AS\s+(?P<stage>\S+)", re.I)
DOCKERFILE_COPY_FROM = re.compile(
    r"^\s*COPY\s+(?:--\S+\s+)*?--from=['\"]?(?P<ref>" + TOKEN + ")", re.IGNORECASE
)
ENV_ASSIGN = re.compile(
    r"^\s*(?:#\s*)?(?:export\s+)?[A-Za-z_][A-Za-z0-9_]*IMAGE\s*=\s*['\"]?(?P<ref>" + TOKEN + ")"
)


class PinError(Exception):
    """One lookup that failed: `problem` says what, `fix` what to do about it."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.problem = problem
        self.fix = fix


@dataclasses.dataclass(frozen=True)
class ImageRef:
    name: str  # as written, registry host included when there is one
    tag: str | None
    digest: str | None  # what follows `@`, as written (may be malformed)
    registry: str  # docker.io, nvcr.io, ...
    repository: str  # the path in that registry (library/ added for official images)

    @property
    def tag_or_latest(self) -> str:
        return self.tag or "latest"

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.registry, self.repository, self.tag_or_latest)

    @property
    def display(self) -> str:
        return f"{self.name}:{self.tag_or_latest}"


@dataclasses.dataclass
class Reference:
    file: str  # relative to the root
    line: int  # 1-based
    start: int  # span of the reference in the line
    end: int
    image: ImageRef


def parse_image(text: str) -> ImageRef | None:
    """`[host[:port]/]path[:tag][@digest]` -> ImageRef; None when it is not an image reference."""
    name_tag, _, digest = text.partition("@")
    if "@" in text and not digest:
        return None
    slash = name_tag.rfind("/")
    colon = name_tag.rfind(":")
    tag = None
    name = name_tag
    if colon > slash:
        name, tag = name_tag[:colon], name_tag[colon + 1 :]
        if not TAG_RE.fullmatch(tag):
            return None
    parts = name.split("/")
    first = parts[0]
    if len(parts) > 1 and ("." in first or ":" in first or first == "localhost"):
        if not HOST_RE.fullmatch(first):
            return None
        registry, path = first.lower(), parts[1:]
    else:
        registry, path = DOCKER_HUB, parts
    if not path or not all(NAME_COMPONENT.fullmatch(p) for p in path):
        return None
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if len(path) == 1:
            path = ["library", *path]
    return ImageRef(name, tag, digest or None, registry, "/".join(path))


def kind_of(path: str) -> str | None:
    base = Path(path).name
    if re.fullmatch(r"(docker-)?compose[\w.-]*\.ya?ml", base):
        return "compose"
    if base.startswith("Dockerfile") or base.endswith(".Dockerfile"):
        return "dockerfile"
    if base.startswith(".env") or base.endswith(".env"):
        return "env"
    if base.endswith(".py"):
        return "python"
    return None


def find_in_line(kind: str, line: str, stages: set[str]) -> list[tuple[int, int, str, bool]]:
    """(start, end, text, literal) of the image references in one line of a file of `kind`;
    `literal` is False for a reference that continues with a variable (`name:${TAG}`)."""
    hits: list[re.Match[str]] = []
    if kind == "compose":
        hits += COMPOSE_IMAGE.finditer(line)
        hits += VAR_DEFAULT.finditer(line)
    elif kind == "dockerfile":
        hits += DOCKERFILE_ARG.finditer(line)
        if m := DOCKERFILE_STAGE.match(line):  # also `FROM ${BASE_IMAGE} AS name`
            stages.add(m.group("stage").lower())
        m = DOCKERFILE_FROM.match(line)
        # `FROM ${BASE_IMAGE}` (the token stops at `$`), `FROM scratch` and `FROM stage`
        if m and not m.group("rest") and m.group("ref").lower() not in stages | {"scratch"}:
            hits.append(m)
        m = DOCKERFILE_COPY_FROM.match(line)
        # an image, not a stage (by name or number): stage names have no `/` and no `:`
        if m and re.search("[/:]", m.group("ref")):
            hits.append(m)
    elif kind == "env":
        hits += ENV_ASSIGN.finditer(line)
    elif kind == "python" and line.rstrip().endswith("pinned image"):
        hits += PYTHON_IMAGE.finditer(line)
    spans = {}
    for m in hits:
        start, end = m.start("ref"), m.end("ref")
        if end < len(line) and line[end] == "$":  # `qwen3-vllm-stack:${TRACK}`: not literal
            whole = re.match(r"\S+", line[start:])
            spans[start] = (start, start + whole.end(), whole.group(), False)
        else:
            spans[start] = (start, end, m.group("ref"), True)
    return [spans[k] for k in sorted(spans)]


def find_references(
    root: Path, files: list[str]
) -> tuple[list[Reference], list[tuple[str, int, str]], dict[str, str]]:
    """(upstream references, local images as (file, line, text), the texts read), in file and
    line order. References whose name or tag comes from a variable are neither."""
    upstream: list[Reference] = []
    local: list[tuple[str, int, str]] = []
    texts: dict[str, str] = {}
    for rel in files:
        kind = kind_of(rel)
        if kind is None:
            raise PinError(
                f"{rel}: not a compose file, Dockerfile, .env or Python file",
                "name files compose*.yaml, Dockerfile*, .env* or *.py",
            )
        text = texts[rel] = read_text(root / rel)
        stages: set[str] = set()
        for lineno, line in enumerate(text.splitlines(), 1):
            for start, end, token, literal in find_in_line(kind, line, stages):
                if token.startswith(LOCAL_PREFIX):
                    local.append((rel, lineno, token))
                    continue
                image = parse_image(token) if literal else None
                if image is not None:
                    upstream.append(Reference(rel, lineno, start, end, image))
    return upstream, local, texts


def read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as e:
        raise PinError(f"{path}: {e.strerror}", "run from the repo root or pass --root") from e
    except UnicodeDecodeError as e:
        raise PinError(f"{path}: not UTF-8 text", "save the file as UTF-8") from e


# --- the registry -------------------------------------------------------------------------------


def registry_map() -> dict[str, str]:
    out = {}
    for item in os.environ.get("PIN_IMAGES_REGISTRY_MAP", "").split(","):
        if not item.strip():
            continue
        host, sep, url = item.partition("=")
        if not sep or not url.strip():
            raise PinError(
                f"PIN_IMAGES_REGISTRY_MAP: {item!r} is not host=URL",
                'write it as "docker.io=http://127.0.0.1:5000,nvcr.io=https://mirror.example"',
            )
        host = host.strip().lower()
        out[DOCKER_HUB if host in DOCKER_HUB_ALIASES else host] = url.strip().rstrip("/")
    return out


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {realm:..., ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        k.lower(): v
        for k, v in re.findall(r'([A-Za-z_]+)\s*=\s*"([^"]*)"', rest)
        + re.findall(r'([A-Za-z_]+)\s*=\s*([^",\s]+)', rest)
    }
    return scheme.lower(), params


class Registry:
    """Anonymous, read-only client of the Registry HTTP API v2: just enough to read a digest."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.map = registry_map()
        self.tokens: dict[tuple[str, str], str] = {}
        self.down: dict[str, PinError] = {}  # registries found unreachable: not asked again

    def base_url(self, registry: str) -> str:
        if registry in self.map:
            return self.map[registry]
        if registry == DOCKER_HUB:
            return DOCKER_HUB_URL
        return f"https://{registry}"

    def _open(self, req: urllib.request.Request):
        req.add_header("User-Agent", USER_AGENT)
        return urllib.request.urlopen(req, timeout=self.timeout)

    def _request(self, image: ImageRef, method: str):
        """One manifest request, with the bearer-token dance. Returns (status, headers, body)."""
        base = self.base_url(image.registry)
        url = f"{base}/v2/{image.repository}/manifests/{urllib.parse.quote(image.tag_or_latest)}"
        token_key = (image.registry, image.repository)
        for attempt in range(2):
            req = urllib.request.Request(url, method=method)
            req.add_header("Accept", ", ".join(MANIFEST_TYPES))
            if token_key in self.tokens:
                req.add_header("Authorization", f"Bearer {self.tokens[token_key]}")
            try:
                with self._open(req) as resp:
                    body = resp.read() if method == "GET" else b""
                    return resp.status, resp.headers, body
            except urllib.error.HTTPError as e:
                body = e.read()
                if e.code == 401 and attempt == 0:
                    self.tokens[token_key] = self._token(image, e.headers.get("WWW-Authenticate"))
                    continue
                return e.code, e.headers, body
            except (urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", e)
                self.down[image.registry] = PinError(
                    f"registry {base} unreachable ({reason})",
                    "run this on a host with network access to the registry "
                    "(or set PIN_IMAGES_REGISTRY_MAP to a mirror)",
                )
                raise self.down[image.registry] from e
        raise AssertionError("unreachable")

    def _token(self, image: ImageRef, challenge: str | None) -> str:
        scheme, params = parse_challenge(challenge or "")
        if scheme != "bearer" or "realm" not in params:
            raise PinError(
                f"registry {image.registry} wants {scheme or 'unknown'} authentication",
                "this script reads public images anonymously; pin this one by hand "
                "(docker buildx imagetools inspect NAME:TAG)",
            )
        query = {"scope": f"repository:{image.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        sep = "&" if "?" in params["realm"] else "?"
        url = params["realm"] + sep + urllib.parse.urlencode(query)
        try:
            with self._open(urllib.request.Request(url)) as resp:
                data = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise PinError(
                f"token service {params['realm']} answered HTTP {e.code}",
                "check the image name; a private image needs `docker login` and pinning by hand",
            ) from e
        except (urllib.error.URLError, OSError) as e:
            raise PinError(
                f"token service {params['realm']} unreachable ({getattr(e, 'reason', e)})",
                "run this on a host with network access to the registry",
            ) from e
        except ValueError as e:
            raise PinError(
                f"token service {params['realm']} answered no JSON",
                "retry later; the registry's auth service misbehaves",
            ) from e
        token = data.get("token") or data.get("access_token")
        if not token:
            raise PinError(
                f"token service {params['realm']} gave no token",
                "retry later; the registry's auth service misbehaves",
            )
        return token

    def digest(self, image: ImageRef) -> str:
        """The digest `image`'s tag points to now (the index's, for a multi-arch image)."""
        if image.registry in self.down:
            raise self.down[image.registry]
        status, headers, _ = self._request(image, "HEAD")
        digest = headers.get("Docker-Content-Digest") if status == 200 else None
        if status == 200 and digest is None:
            status, headers, body = self._request(image, "GET")
            if status == 200:
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if status != 200:
            raise self._http_error(image, status, headers)
        digest = digest.strip().lower()
        if not DIGEST_RE.fullmatch(digest):
            raise PinError(
                f"registry answered an unusable digest {digest!r}",
                "pin it by hand (docker buildx imagetools inspect NAME:TAG)",
            )
        return digest

    def _http_error(self, image: ImageRef, status: int, headers) -> PinError:
        where = f"{image.registry}/{image.repository}"
        if status == 404:
            return PinError(
                f"tag {image.tag_or_latest!r} not found in {where}",
                "fix the tag in the file (the registry's tag list shows what exists)",
            )
        if status in (401, 403):
            return PinError(
                f"access to {where} denied (HTTP {status})",
                "check the image name; private images need pinning by hand",
            )
        if status == 429:
            return PinError(
                "rate limited by the registry (HTTP 429)", "wait and run again, or log in"
            )
        return PinError(f"registry answered HTTP {status}", "retry later")


# --- rewriting ----------------------------------------------------------------------------------


def pinned_text(image: ImageRef, digest: str) -> str:
    tag = f":{image.tag}" if image.tag else ""
    return f"{image.name}{tag}@{digest}"


def rewrite(text: str, refs: list[Reference], digests: dict[tuple[str, str, str], str]) -> str:
    """`text` with each reference in `refs` (all in this file) pinned to its digest."""
    lines = text.splitlines(keepends=True)
    for ref in sorted(refs, key=lambda r: (r.line, -r.start)):
        line = lines[ref.line - 1]
        new = pinned_text(ref.image, digests[ref.image.key])
        lines[ref.line - 1] = line[: ref.start] + new + line[ref.end :]
    return "".join(lines)


def write_atomically(root: Path, contents: dict[str, str]) -> None:
    """Write every file to a temp file beside it first, then rename them all into place."""
    staged: list[tuple[str, Path]] = []
    try:
        for rel, text in contents.items():
            target = root / rel
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            staged.append((tmp, target))
            with os.fdopen(fd, "wb") as f:
                f.write(text.encode("utf-8"))
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, target.stat().st_mode & 0o7777)
    except OSError as e:
        for tmp, _ in staged:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise PinError(
            f"cannot write beside {e.filename}: {e.strerror}", "check permissions"
        ) from e
    for tmp, target in staged:
        os.replace(tmp, target)


def short(digest: str | None) -> str:
    if digest is None:
        return "(none)"
    return digest[:19] if DIGEST_RE.fullmatch(digest) else f"{digest!r} (malformed)"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python3 -m scripts.pin_images",
        description="Pin the stack's upstream images by digest (needs network).",
    )
    p.add_argument("files", nargs="*", help=f"files relative to --root (default: {DEFAULT_FILES})")
    p.add_argument("--root", type=Path, default=ROOT, help="the repo checkout (default: this one)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 if a pin is missing or stale")
    mode.add_argument("--dry-run", action="store_true", help="print what would change")
    args = p.parse_args(argv)
    files = args.files or list(DEFAULT_FILES)

    try:
        timeout = float(os.environ.get("PIN_IMAGES_TIMEOUT", "30"))
        registry = Registry(timeout)
        refs, local, texts = find_references(args.root, files)
    except (PinError, ValueError) as e:
        fix = f"; fix: {e.fix}" if isinstance(e, PinError) else ""
        print(f"pin_images: error: {e}{fix}", file=sys.stderr)
        return 2

    digests: dict[tuple[str, str, str], str] = {}
    failed: dict[tuple[str, str, str], tuple[Reference, PinError]] = {}
    for ref in refs:
        key = ref.image.key
        if key in digests or key in failed:
            continue
        try:
            digests[key] = registry.digest(ref.image)
        except PinError as e:
            failed[key] = (ref, e)
    if failed:
        for ref, e in failed.values():
            print(
                f"pin_images: error: {ref.file}:{ref.line}: {ref.image.display}: {e.problem}; "
                f"fix: {e.fix}",
                file=sys.stderr,
            )
        print(f"pin_images: {len(failed)} lookup(s) failed; no file changed", file=sys.stderr)
        return 2

    rows = []
    stale = []
    for ref in refs:
        old, new = ref.image.digest, digests[ref.image.key]
        if old == new:
            status = f"unchanged {short(new)}"
        else:
            stale.append(ref)
            if args.check:
                verb = "MISSING" if old is None else "STALE"
            else:
                verb = ("would pin" if args.dry_run else "pinned") if old is None else "updated"
                verb = "would update" if args.dry_run and old is not None else verb
            status = f"{verb} {short(old)} -> {short(new)}"
        rows.append((f"{ref.file}:{ref.line}", ref.image.display, status))
    for rel, line, text in local:
        rows.append((f"{rel}:{line}", text, "skipped (built locally)"))
    order = {rel: i for i, rel in enumerate(files)}
    rows.sort(key=lambda r: (order[r[0].rsplit(":", 1)[0]], int(r[0].rsplit(":", 1)[1])))
    w1 = max((len(r[0]) for r in rows), default=0)
    w2 = max((len(r[1]) for r in rows), default=0)
    for loc, image, status in rows:
        print(f"{loc:<{w1}}  {image:<{w2}}  {status}")

    if args.check:
        if stale:
            print(
                f"pin_images: {len(stale)} of {len(refs)} pin(s) missing or stale; "
                "run `python3 -m scripts.pin_images` and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"pin_images: all {len(refs)} pin(s) current")
        return 0
    if not stale:
        print(f"pin_images: all {len(refs)} pin(s) current; nothing to write")
        return 0
    by_file: dict[str, list[Reference]] = {}
    for ref in stale:
        by_file.setdefault(ref.file, []).append(ref)
    if args.dry_run:
        print(f"pin_images: dry run: {len(stale)} pin(s) in {', '.join(by_file)} would change")
        return 0
    try:
        for rel in by_file:
            if read_text(args.root / rel) != texts[rel]:
                raise PinError(f"{rel} changed while the lookups ran", "run it again")
        contents = {rel: rewrite(texts[rel], rs, digests) for rel, rs in by_file.items()}
        write_atomically(args.root, contents)
    except PinError as e:
        print(f"pin_images: error: {e}; fix: {e.fix}", file=sys.stderr)
        return 2
    print(f"pin_images: {len(stale)} pin(s) written to {', '.join(by_file)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
