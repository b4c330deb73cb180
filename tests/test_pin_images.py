"""scripts/pin_images.py against a fake registry (tests/fixtures/fakeregistry.py): the real script
runs as a subprocess on copies of the GPU files, so what is checked is what a user gets.

The fake knows the repositories below; the tags come from the files themselves, so a tag bump in
compose.yaml needs no change here. An image from a new repository makes the pin run fail with
"not found": add the repository to REPOS."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from scripts import pin_images
from tests.fixtures.fakeregistry import DOCKER_LIST, OCI_INDEX, OCI_MANIFEST, FakeRegistry

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
GPU_FILES = ("compose.yaml", "Dockerfile", ".env.example", "scripts/stack/settings.py")
# name as written in the files -> (repository on Docker Hub, served as a Docker manifest list)
REPOS = {
    "nginxinc/nginx-unprivileged": ("nginxinc/nginx-unprivileged", False),
    "prom/prometheus": ("prom/prometheus", True),  # Docker Hub serves it as a manifest list
    "grafana/grafana": ("grafana/grafana", False),
    "nvidia/cuda": ("nvidia/cuda", False),
}
PIN = re.compile(r"@sha256:[0-9a-f]{64}")
ANY_PIN = re.compile(r"@sha256:[0-9A-Za-z.]*")  # also a malformed or abbreviated one


def occurrences(text: str, name: str):
    """(tag, pin or None) for each `name:tag[@sha256:...]` in text; independent of the script's
    own parser."""
    pat = re.compile(
        r"(?<![\w./-])" + re.escape(name) + r":(?P<tag>[\w][\w.-]*)(?P<pin>@sha256:[0-9A-Za-z.]*)?"
    )
    return [(m["tag"], m["pin"]) for m in pat.finditer(re.sub(r"\$\{\w+:?-", " ", text))]


def tags_in(root: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for f in GPU_FILES:
        text = (root / f).read_text()
        for name in REPOS:
            out.setdefault(name, set()).update(t for t, _ in occurrences(text, name))
    return out


def run(root: Path, *args: str, registries: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(
        PIN_IMAGES_REGISTRY_MAP=",".join(f"{h}={u}" for h, u in registries.items()),
        PIN_IMAGES_TIMEOUT="10",
        NO_PROXY="127.0.0.1,localhost",
    )
    r = subprocess.run(
        [sys.executable, "-m", "scripts.pin_images", "--root", str(root), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(f"$ pin_images {' '.join(args)} -> {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def snapshot(root: Path) -> dict[str, bytes]:
    return {f: (root / f).read_bytes() for f in GPU_FILES}


@pytest.fixture
def work(tmp_path: Path) -> Path:
    for f in GPU_FILES:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / f, tmp_path / f)
    return tmp_path


@pytest.fixture
def registry(work: Path):
    """A fake Docker Hub with every tag the copied files name, each a two-platform index."""
    with FakeRegistry() as reg:
        reg.expected = {}  # (name, tag) -> index digest
        for name, tags in tags_in(work).items():
            repo, docker = REPOS[name]
            for tag in tags:
                reg.expected[name, tag] = reg.push_index(repo, tag, seed="1", docker=docker)
        assert {n for n, _ in reg.expected} == set(REPOS), "a repository vanished from the files"
        yield reg


def assert_pinned(root: Path, expected: dict[tuple[str, str], str]) -> int:
    n = 0
    for f in GPU_FILES:
        text = (root / f).read_text()
        for name in REPOS:
            for tag, pin in occurrences(text, name):
                assert pin == "@" + expected[name, tag], f"{f}: {name}:{tag} pinned {pin}"
                n += 1
    return n


def test_pins_every_upstream_reference_and_nothing_else(work, registry):
    before = snapshot(work)
    r = run(work, registries={"docker.io": registry.url})
    assert r.returncode == 0, r.stderr
    pinned = assert_pinned(work, registry.expected)
    assert pinned >= 10  # compose (4), Dockerfile (1), .env.example (2), settings.py (3)
    # the index digest, never a per-platform one
    for (name, tag), digest in registry.expected.items():
        assert digest != registry.platform_digest(REPOS[name][0], tag)
    # apart from the pins, every byte as it was (line endings, comments, quoting, the rest)
    for f, old in before.items():
        new = (work / f).read_bytes()
        assert ANY_PIN.sub("", new.decode()) == ANY_PIN.sub("", old.decode()), f
        assert new.count(b"\n") == old.count(b"\n")
    # one table row per reference, naming file:line; the local image is listed as skipped
    rows = [ln for ln in r.stdout.splitlines() if re.match(r"^\S+:\d+\s", ln)]
    assert len([ln for ln in rows if "skipped" not in ln]) == pinned
    assert any("qwen3-vllm-stack" in ln and "skipped (built locally)" in ln for ln in rows)
    for ln in rows:
        f, line = ln.split()[0].rsplit(":", 1)
        src = (work / f).read_text().splitlines()[int(line) - 1]
        assert ln.split()[1].split(":")[0] in src, (ln, src)
    # lookups are HEADs (Docker Hub does not count them against the pull limit) that accept
    # both index types and both manifest types
    manifest_requests = [q for q in registry.requests if "/manifests/" in q[1]]
    assert manifest_requests and all(m == "HEAD" for m, _, _ in manifest_requests)
    for _, _, accept in manifest_requests:
        for t in pin_images.MANIFEST_TYPES:
            assert t in accept

    # a second run: everything unchanged, nothing written
    after_first = snapshot(work)
    r = run(work, registries={"docker.io": registry.url})
    assert r.returncode == 0, r.stderr
    assert snapshot(work) == after_first
    assert r.stdout.count("unchanged") == pinned
    assert "nothing to write" in r.stdout
    assert run(work, "--check", registries={"docker.io": registry.url}).returncode == 0


def test_check_and_dry_run_see_a_moved_tag(work, registry):
    assert run(work, registries={"docker.io": registry.url}).returncode == 0
    assert run(work, "--check", registries={"docker.io": registry.url}).returncode == 0
    pinned = snapshot(work)
    tag = sorted(t for n, t in registry.expected if n == "grafana/grafana")[0]
    moved = registry.push_index("grafana/grafana", tag, seed="2")  # upstream rebuilt the tag
    assert moved != registry.expected["grafana/grafana", tag]

    r = run(work, "--check", registries={"docker.io": registry.url})
    assert r.returncode == 1
    stale = [ln for ln in r.stdout.splitlines() if "STALE" in ln]
    assert stale and all(f"grafana/grafana:{tag}" in ln for ln in stale)
    assert moved[:19] in stale[0]
    assert "run `python3 -m scripts.pin_images`" in r.stderr
    assert snapshot(work) == pinned

    r = run(work, "--dry-run", registries={"docker.io": registry.url})
    assert r.returncode == 0
    assert "would update" in r.stdout and snapshot(work) == pinned

    r = run(work, registries={"docker.io": registry.url})
    assert r.returncode == 0
    registry.expected["grafana/grafana", tag] = moved
    assert_pinned(work, registry.expected)
    assert r.stdout.count("updated") == len(stale)


def test_check_fails_on_a_missing_pin(work, registry):
    # drop every pin from the copies: --check must call each one MISSING and write nothing
    for f in GPU_FILES:
        (work / f).write_bytes(ANY_PIN.sub("", (work / f).read_text()).encode())
    before = snapshot(work)
    r = run(work, "--check", registries={"docker.io": registry.url})
    assert r.returncode == 1
    missing = [ln for ln in r.stdout.splitlines() if "MISSING" in ln]
    assert len(missing) == sum(
        len(occurrences(before[f].decode(), n)) for f in GPU_FILES for n in REPOS
    )
    assert snapshot(work) == before


def test_unknown_tag_is_one_line_and_no_file_changes(work, registry):
    tag = sorted(t for n, t in registry.expected if n == "prom/prometheus")[0]
    registry.untag("prom/prometheus", tag)
    before = snapshot(work)
    r = run(work, registries={"docker.io": registry.url})
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert len(errors) == 1, r.stderr
    assert f"prom/prometheus:{tag}" in errors[0]
    assert "not found" in errors[0] and "fix:" in errors[0]
    assert snapshot(work) == before  # the other images resolved, yet nothing was written
    assert not list(work.glob(".*.tmp"))


def test_unreachable_registry_names_each_image(work):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    before = snapshot(work)
    r = run(work, registries={"docker.io": dead})
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    images = {f"{n}:{t}" for n, ts in tags_in(work).items() for t in ts}
    assert len(errors) == len(images)
    for image in images:
        assert sum(image in ln for ln in errors) == 1, image
    assert all("unreachable" in ln and "fix:" in ln for ln in errors)
    assert snapshot(work) == before


def test_without_a_digest_header_it_hashes_the_manifest(work, registry):
    registry.omit_digest_header = True
    r = run(work, registries={"docker.io": registry.url})
    assert r.returncode == 0, r.stderr
    assert_pinned(work, registry.expected)
    assert any(m == "GET" and "/manifests/" in p for m, p, _ in registry.requests)


def test_other_registries_and_every_line_form(tmp_path):
    """nvcr.io and ghcr.io through their own fakes; quoting, CRLF, comments, FROM forms."""
    compose = (
        "services:\n"
        "  a:\n"
        '    image: "nvcr.io/nvidia/pytorch:25.01-py3"   # keep this comment\r\n'
        "  b:\n"
        "    image: ${B_IMAGE-ghcr.io/acme/tool:v1@sha256:abc...}\n"
        "  c:\n"
        "    image: qwen3-vllm-stack/ops:bookworm\n"
        "    build: {args: {BASE_IMAGE: '${BASE_IMAGE:-debian:bookworm-slim}'}}\n"
        "  d:\n"
        "    image: qwen3-vllm-stack:${TRACK:-cu124}\n"
    )
    dockerfile = (
        "ARG BASE_IMAGE=nvcr.io/nvidia/pytorch:25.01-py3\n"
        "FROM ${BASE_IMAGE} AS build\n"
        "FROM --platform=$BUILDPLATFORM debian:bookworm-slim AS tools\n"
        "FROM tools\n"
        "FROM scratch\n"
        "COPY --from=tools /y /y\n"
        "COPY --chown=1:1 --from=ghcr.io/acme/tool:v1 /x /x\n"
    )
    env = (
        "# BASE_IMAGE=debian:bookworm-slim\n"
        "OTHER=debian:bookworm-slim\n"
        "X_IMAGE='ghcr.io/acme/tool:v1'\n"
    )
    for name, text in (
        ("compose.yaml", compose),
        ("Dockerfile", dockerfile),
        (".env.example", env),
    ):
        (tmp_path / name).write_bytes(text.encode())
    with FakeRegistry() as hub, FakeRegistry() as ngc, FakeRegistry() as ghcr:
        debian = hub.push_index("library/debian", "bookworm-slim")
        pytorch = ngc.push_index("nvidia/pytorch", "25.01-py3", docker=True)
        tool = ghcr.push_index("acme/tool", "v1")
        regs = {"docker.io": hub.url, "nvcr.io": ngc.url, "ghcr.io": ghcr.url}
        r = run(tmp_path, "compose.yaml", "Dockerfile", ".env.example", registries=regs)
        assert r.returncode == 0, r.stderr
        assert all("/v2/library/debian/" in p for _, p, _ in hub.requests if "/manifests/" in p)
    assert (tmp_path / "compose.yaml").read_bytes().decode() == compose.replace(
        "pytorch:25.01-py3", f"pytorch:25.01-py3@{pytorch}"
    ).replace("tool:v1@sha256:abc...", f"tool:v1@{tool}").replace(
        "debian:bookworm-slim", f"debian:bookworm-slim@{debian}"
    )
    assert (tmp_path / "Dockerfile").read_text() == dockerfile.replace(
        "pytorch:25.01-py3", f"pytorch:25.01-py3@{pytorch}"
    ).replace("debian:bookworm-slim", f"debian:bookworm-slim@{debian}").replace(
        "tool:v1", f"tool:v1@{tool}"
    )
    # OTHER= names no image; X_IMAGE does
    assert (tmp_path / ".env.example").read_text() == (
        f"# BASE_IMAGE=debian:bookworm-slim@{debian}\nOTHER=debian:bookworm-slim\n"
        f"X_IMAGE='ghcr.io/acme/tool:v1@{tool}'\n"
    )
    assert r.stdout.count("skipped (built locally)") == 2


@pytest.mark.skipif(
    subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0
    if shutil.which("docker")
    else True,
    reason="docker compose not installed",
)
def test_pinned_compose_file_still_validates(work, registry):
    assert run(work, registries={"docker.io": registry.url}).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.endswith("IMAGE") and k != "COMPOSE_FILE"}
    env.update(API_KEY_FILE="/dev/null", GRAFANA_ADMIN_PASSWORD_FILE="/dev/null")
    r = subprocess.run(
        [
            *("docker", "compose", "--project-directory", str(work)),
            *("-f", str(work / "compose.yaml"), "--profile", "monitoring"),
            *("config", "--format", "json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    services = json.loads(r.stdout)["services"]
    images = {s["image"] for s in services.values()}
    images |= {s["build"]["args"]["BASE_IMAGE"] for s in services.values() if "build" in s}
    for (name, tag), digest in registry.expected.items():
        ref = f"{name}:{tag}@{digest}"
        if ref in (work / "compose.yaml").read_text():
            assert ref in images, ref


def test_the_fake_speaks_registry_v2():
    """What the script's tests rely on: tokens are needed, Accept decides index vs platform."""
    with FakeRegistry() as reg:
        index = reg.push_index("library/x", "1")
        listed = reg.push_index("library/y", "1", docker=True)

        def req(path, accept="", token=None, method="HEAD"):
            rq = urllib.request.Request(reg.url + path, method=method)
            if accept:
                rq.add_header("Accept", accept)
            if token:
                rq.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(rq) as r:
                    return r.status, r.headers, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.headers, e.read()

        code, h, _ = req("/v2/", method="GET")
        assert code == 401 and f'realm="{reg.url}/token"' in h["WWW-Authenticate"]
        _, _, body = req(
            "/token?service=fake-registry&scope=repository:library/x:pull", method="GET"
        )
        token = json.loads(body)["token"]
        assert json.loads(body)["access_token"] == token
        code, h, _ = req("/v2/library/y/manifests/1", OCI_INDEX, token)  # other repo's token
        assert code == 401 and 'error="insufficient_scope"' in h["WWW-Authenticate"]
        code, h, body = req("/v2/library/x/manifests/1", OCI_INDEX, token, "GET")
        assert code == 200 and h["Docker-Content-Digest"] == index == sha256(body)
        assert h["Content-Type"] == OCI_INDEX and len(json.loads(body)["manifests"]) == 2
        code, h, _ = req("/v2/library/x/manifests/1", OCI_MANIFEST, token)
        assert code == 200 and h["Docker-Content-Digest"] == reg.platform_digest("library/x", "1")
        code, _, body = req("/v2/library/x/manifests/2", OCI_INDEX, token, "GET")
        assert code == 404 and json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        _, _, body = req(
            "/token?service=fake-registry&scope=repository:library/y:pull", method="GET"
        )
        code, h, _ = req("/v2/library/y/manifests/1", DOCKER_LIST, json.loads(body)["token"])
        assert code == 200 and h["Docker-Content-Digest"] == listed
        assert h["Content-Type"] == DOCKER_LIST


def sha256(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def test_repo_gpu_files_pin_every_upstream_image():
    """compose.yaml, Dockerfile, .env.example and the settings registry as they are in this
    checkout: every upstream
    image reference carries @sha256:<64 hex> (the script's parser and an independent scan)."""
    refs, local, _ = pin_images.find_references(ROOT, list(GPU_FILES))
    assert {r.image.name for r in refs} >= set(REPOS)
    assert local  # the stack's own image is found and skipped
    unpinned = [
        f"{r.file}:{r.line}: {r.image.display}"
        for r in refs
        if not (r.image.digest and pin_images.DIGEST_RE.fullmatch(r.image.digest))
    ]
    image_line = re.compile(r"^\s*(?:-\s+)?image:|IMAGE\s*=|IMAGE:?-|^\s*FROM\s|pinned image$")
    token = re.compile(r"(?:^|(?<=[\s='\"]))([a-z0-9][a-z0-9._/-]*:\w[\w.-]*)(@[^\s}'\"]*)?")
    scanned = 0
    for f in GPU_FILES:
        for n, line in enumerate((ROOT / f).read_text().splitlines(), 1):
            if not image_line.search(line):
                continue
            for m in token.finditer(re.sub(r"\$\{\w+:?-", " ", line)):
                if m[1].startswith("qwen3-vllm-stack"):
                    continue
                scanned += 1
                if not (m[2] and PIN.fullmatch(m[2])):
                    unpinned.append(f"{f}:{n}: {m[1]} (scan)")
    assert scanned >= len(refs)
    assert not unpinned, "unpinned: run `python3 -m scripts.pin_images`:\n" + "\n".join(
        sorted(set(unpinned))
    )
