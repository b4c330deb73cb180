"""Shared fixtures: stand-in models, the fake ModelScope hub, and one real CPU vLLM server per
test session (fake hub -> scripts.download -> scripts.serve)."""

from __future__ import annotations

import ast
import contextlib
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from bench import standins
from tests.fixtures.fakehub import FakeHub

ROOT = Path(__file__).resolve().parent.parent
MODEL_ID = "Qwen/Qwen3-8B"


def smoke_checks() -> list[str]:
    """Every check smoke/test_smoke.py makes, as `smoke/run` prints it (`ok   <way>: <name>`):
    its docstring's first line, once per way (curl and sdk unless @only names fewer)."""
    tree = ast.parse((ROOT / "smoke" / "test_smoke.py").read_text())
    checks = []
    for fn in tree.body:
        if not (isinstance(fn, ast.FunctionDef) and fn.name.startswith("test_")):
            continue
        ways = ("curl", "sdk")
        for d in fn.decorator_list:
            if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "only":
                ways = tuple(a.value for a in d.args)
        name = ast.get_docstring(fn).splitlines()[0]
        checks += [f"{way}: {name}" for way in ways]
    return checks


SMOKE_CHECKS = smoke_checks()  # all of them pass against the stand-in (REASONING_FIELDS=both)
SMOKE_VERDICT = re.compile(
    r"smoke: (?P<passed>\d+) passed, (?P<failed>\d+) failed against (?P<url>\S+) "
    r"\(model (?P<model>[^)]+)\)(?:; skipped: (?P<skipped>.+))?"
)


def smoke_verdict(output: str) -> re.Match:
    """The smoke suite's one verdict line."""
    found = [m for ln in output.splitlines() if (m := SMOKE_VERDICT.fullmatch(ln.strip()))]
    assert len(found) == 1, f"want one verdict line, found {len(found)}:\n{output[-3000:]}"
    return found[0]


LOG_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+(Z|[+-]\d\d:\d\d) ")


def assert_smoke_passed(output: str, url: str | None = "http://gateway:8080") -> re.Match:
    """A smoke log (timestamps allowed, as `compose logs --timestamps` writes them): no failure,
    nothing skipped, every check in SMOKE_CHECKS ran (against `url`, unless None), and the
    verdict counts every `ok` line. Returns the verdict."""
    output = "\n".join(LOG_TIMESTAMP.sub("", ln) for ln in output.splitlines())
    verdict = smoke_verdict(output)
    assert verdict["failed"] == "0" and verdict["skipped"] is None, output[-3000:]
    assert url is None or verdict["url"] == url, verdict["url"]
    ok = {ln.strip()[5:] for ln in output.splitlines() if ln.startswith("ok   ")}
    assert set(SMOKE_CHECKS) <= ok, sorted(set(SMOKE_CHECKS) - ok)
    assert int(verdict["passed"]) == len(ok), verdict[0]
    return verdict


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_env(**extra: str) -> dict[str, str]:
    """Settings for a CPU run of the bundle's scripts (what compose.cpu.yaml sets)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELSCOPE_", "HF_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        SERVE_DEVICE="cpu",
        GPU_MEMORY_UTILIZATION="0.3",  # on CPU: the share of RAM vLLM may take
        VLLM_CPU_KVCACHE_SPACE="1",
        MODEL_ID=MODEL_ID,
        NO_PROXY="127.0.0.1,localhost",
        HF_HUB_OFFLINE="1",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def scripted_model() -> Path:
    t0 = time.monotonic()
    path = standins.ensure("scripted")
    print(f"\nstand-in scripted ready in {time.monotonic() - t0:.1f}s: {path}")
    return path


@pytest.fixture(scope="session")
def hub(scripted_model):
    with FakeHub({MODEL_ID: scripted_model}) as h:
        yield h


def hub_env(models_dir: Path, hub_url: str, source: str = "modelscope") -> dict[str, str]:
    """What the download container gets to fetch from `hub_url`: ModelScope's endpoint, or
    MODEL_SOURCE=huggingface with HF_ENDPOINT (hub contact allowed, its own HF_HOME)."""
    if source == "modelscope":
        return {"MODELS_DIR": str(models_dir), "MODELSCOPE_ENDPOINT": hub_url}
    return {
        "MODELS_DIR": str(models_dir),
        "MODEL_SOURCE": "huggingface",
        "HF_ENDPOINT": hub_url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(models_dir.parent / f".hf-home-{models_dir.name}"),
    }


def run_download(
    models_dir: Path, hub_url: str, source: str = "modelscope", **extra: str
) -> subprocess.CompletedProcess:
    env = cpu_env(**hub_env(models_dir, hub_url, source), **extra)
    return subprocess.run(
        [sys.executable, "-m", "scripts.download"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="session")
def served_models(tmp_path_factory, hub) -> Path:
    models = tmp_path_factory.mktemp("models")
    r = run_download(models, hub.url)
    assert r.returncode == 0, r.stdout + r.stderr
    return models


@contextlib.contextmanager
def cpu_server(work: Path, models: Path, python: str = sys.executable, **env: str):
    """The real vLLM OpenAI server (CPU build) through scripts.serve on the stand-in in `models`,
    started by `python` (the vllm_python fixture), with an API key and these settings; yields its
    URL, key and log, stops it after."""
    key_file = work / "api_key"
    key_file.write_text(secrets.token_hex(16))
    port = free_port()
    log = work / "vllm.log"
    env = cpu_env(
        MODELS_DIR=str(models),
        SERVE_HOST="127.0.0.1",
        SERVE_PORT=str(port),
        API_KEY_FILE=str(key_file),
        **env,
    )
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [python, "-m", "scripts.serve"], env=env, cwd=ROOT,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vLLM exited with {proc.returncode}:\n{log.read_text()[-5000:]}")
            if time.monotonic() - t0 > 600:
                pytest.fail(f"vLLM not ready in 600s:\n{log.read_text()[-5000:]}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        print(f"\nCPU vLLM server ready in {time.monotonic() - t0:.1f}s at {base}")
        yield {"base_url": base, "key_file": key_file, "key": key_file.read_text(), "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def vllm_python(request) -> str:
    """The Python whose vLLM serves: the test venv's (vllm-cpu of the cpu track), or a twin's
    (--vllm-python, `tests/run versions`: vllm-cpu at a GPU track's version). A test that uses it
    runs once per shipped vLLM version; it is the only way a test reaches the served vLLM."""
    return request.config.getoption("--vllm-python") or sys.executable


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory, served_models, vllm_python, request):
    """The real vLLM OpenAI server (CPU build) on the scripted stand-in, with an API key."""
    work = tmp_path_factory.mktemp("server")
    # API_DOCS: /openapi.json, the gateway tests read every route vLLM registers
    with cpu_server(work, served_models, vllm_python, API_DOCS="1") as server:
        try:
            yield server
        finally:
            if request.session.testsfailed:
                log = server["log"].read_text(errors="replace")[-6000:]
                print(f"\n--- vLLM server log (tail) ---\n{log}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (CI=true) a skipped test is a failed one: every check there must run, and a tool
    that `tests/run` failed to install must not turn a check into a silent skip."""
    outcome = yield
    report = outcome.get_result()
    report.served_vllm = "vllm_python" in item.fixturenames  # the version line (below)
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which runs every check: {reason}"


# ---- tiers: every test is in one (its closest mark), `tests/run TIER` runs one ------------------
TIERS = ("unit", "native", "stack")


def pytest_addoption(parser):
    parser.addoption("--tier", choices=(*TIERS, "all"), default="all",
                     help="run one tier (tests/run unit|native|stack|all)")  # fmt: skip
    parser.addoption("--vllm-python", default=None, metavar="PYTHON",
                     help="serve with this Python's vLLM and run only the tests that use the "
                     "vllm_python fixture (tests/run versions)")  # fmt: skip


def tier_of(item) -> str | None:
    """The tier of a test: its closest unit/native/stack mark (the function's over its
    module's pytestmark)."""
    return next((m.name for m in item.iter_markers() if m.name in TIERS), None)


def pytest_collection_modifyitems(config, items):
    two = [i.nodeid for i in items if len({m.name for m in i.own_markers if m.name in TIERS}) > 1]
    if two:
        raise pytest.UsageError(
            "a test is in one tier; these are marked with two:\n  " + "\n  ".join(two)
        )
    tiered = [(item, tier_of(item)) for item in items]
    untiered = [item.nodeid for item, tier in tiered if tier is None]
    if untiered:
        raise pytest.UsageError(
            "every test is in a tier: mark these unit, native or stack:\n  " + "\n  ".join(untiered)
        )
    want = config.getoption("--tier")
    version_run = bool(config.getoption("--vllm-python"))
    if want == "all" and not version_run:
        return
    keep = [
        item
        for item, tier in tiered
        if want in ("all", tier) and (not version_run or "vllm_python" in item.fixturenames)
    ]
    kept = set(map(id, keep))
    dropped = [item for item in items if id(item) not in kept]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


# ---- the version matrix: one line per session that served a vLLM (tests/run versions, README) ----
VERSION_FACTS: dict[str, str] = {}  # filled by the tests that measure them (smoke, the probe)
# the tests counted per concern: module, or module::test-name prefix
VERSION_GROUPS = {
    "tool calls": "tests/test_tools.py::",
    "reasoning fields": "tests/test_reasoning_fields.py::",
    "clients": "tests/test_clients.py::",
}


def served_vllm(python: str) -> str:
    """`vllm-cpu X.Y.Z` of a Python's environment, as serve finds it (Engine.installed: the
    metadata; vLLM is not imported)."""
    code = "from scripts.stack.vllm_args import Engine\nprint(Engine.installed().shown)"
    r = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    return r.stdout.strip() or r.stderr.strip()[-200:]


def version_line(served: str, outcome: dict[str, bool], facts: dict[str, str]) -> str:
    """`versions: vllm-cpu 0.19.1: 55 passed, 0 failed; smoke 37 passed, 0 failed; ...`: what a
    session that served a vLLM found (outcome: nodeid -> passed), for the README's table."""

    def counts(ids) -> str:
        ok = sum(outcome[i] for i in ids)
        return f"{ok} passed, {len(ids) - ok} failed"

    parts = [counts(list(outcome))] + [f"{k} {v}" for k, v in facts.items()]
    for name, prefix in VERSION_GROUPS.items():
        group = [i for i in outcome if i.startswith(prefix)]
        if group:
            parts.append(f"{name} {counts(group)}")
    return f"versions: {served}: " + "; ".join(parts)


def pytest_terminal_summary(terminalreporter, config):
    """The version line of a session whose tests used vllm_python."""
    outcome: dict[str, bool] = {}
    for key in ("passed", "failed", "error"):
        for r in terminalreporter.stats.get(key, []):
            if getattr(r, "served_vllm", False):
                outcome[r.nodeid] = outcome.get(r.nodeid, True) and key == "passed"
    if outcome:
        served = served_vllm(config.getoption("--vllm-python") or sys.executable)
        terminalreporter.write_line(version_line(served, outcome, VERSION_FACTS))


class UnitTierError(AssertionError):
    pass


def unit_may_run(argv: list[str]) -> bool:
    """What a unit test may start: Python, `uname` (Python's platform module asks it), and
    Compose itself resolving the files (`docker compose [-f ...] config`, `docker compose
    version`: files in, YAML out, no engine)."""
    exe = os.path.basename(str(argv[0]))
    if exe.startswith("python") or str(argv[0]) == sys.executable or exe == "uname":
        return True
    if exe == "docker" and argv[1:2] == ["compose"] or exe == "docker-compose":
        return "config" in argv or "version" in argv
    return False


@pytest.fixture(autouse=True)
def unit_tier_guard(request, monkeypatch):
    """A unit test starts no process but those of unit_may_run and reaches no Docker engine:
    Popen of anything else fails it, and a child that asks the engine finds none (DOCKER_HOST
    points nowhere)."""
    if tier_of(request.node) != "unit":
        yield
        return
    real_init = subprocess.Popen.__init__

    def guarded(self, args, *a, **kw):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(map(str, args))
        if kw.get("shell") or not unit_may_run([kw.get("executable") or argv[0], *argv[1:]]):
            raise UnitTierError(
                f"a unit test runs {' '.join(map(str, argv))[:120]!r}: the unit tier runs "
                "Python alone (and Compose's config); mark the test native, or stack for Docker"
            )
        real_init(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/unit-tier-has-no-docker.sock")
    yield


@pytest.fixture(scope="session")
def images():
    """The local images (Debian base, ops: nginx and Prometheus) and the CPU wheelhouse, built
    once per session: no registry is reachable here (tests/fixtures/compose_stack.py)."""
    from tests.fixtures.compose_stack import build_images

    build_images()


@pytest.fixture(scope="session")
def stack(images, tmp_path_factory):
    """The compose stack of the stack tier, built and brought into being once per session
    (tests/fixtures/compose_stack.py); every stack test and the CI job's tests share it."""
    from tests.fixtures.compose_stack import build_stack

    yield from build_stack(tmp_path_factory)
