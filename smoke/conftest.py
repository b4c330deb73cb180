"""The smoke suite's runner parts: each check runs once with curl and once with the openai SDK
(the `api` fixture), answers are fetched once per way and shared by the checks that read them,
and the run ends with one verdict line naming what failed or was skipped:

    smoke: N passed, M failed against URL (model NAME)
"""

from __future__ import annotations

import json

import pytest
from api import ANSWERS, BASE, FIELDS, KEY, MODEL, SDK, Curl

_RESULTS: dict[str, tuple[str, str]] = {}  # check name -> (outcome, skip reason)


def pytest_generate_tests(metafunc):
    if "api" in metafunc.fixturenames:
        ways = getattr(metafunc.function, "ways", ("curl", "sdk"))
        metafunc.parametrize("api", ways, indirect=True, scope="session")


class Cached:
    """One way of calling, with each distinct request answered once for the whole run."""

    def __init__(self, way):
        self.way, self.name, self._seen = way, way.name, {}

    def __getattr__(self, attr):
        fn = getattr(self.way, attr)
        if attr not in ("completion", "chat", "chat_stream"):
            return fn

        def cached(body, **kw):
            k = (attr, json.dumps(body, sort_keys=True), json.dumps(kw, sort_keys=True))
            if k not in self._seen:
                try:
                    self._seen[k] = ("ok", fn(body, **kw))
                except Exception as e:  # every check that reads this answer fails the same way
                    self._seen[k] = ("error", e)
            kind, value = self._seen[k]
            if kind == "error":
                raise value
            return value

        return cached


@pytest.fixture(scope="session")
def api(request, tmp_path_factory):
    way = Curl(tmp_path_factory.mktemp("curl")) if request.param == "curl" else SDK()
    return Cached(way)


@pytest.fixture
def answers():
    """Checks of the answer's text: skipped for dummy weights."""
    if not ANSWERS:
        pytest.skip("SMOKE_CHECK_ANSWERS=0")


@pytest.fixture
def tutorial_field():
    """Checks of the tutorial's `reasoning_content`: skipped where the server is told to leave it
    out (REASONING_FIELDS=reasoning)."""
    if FIELDS == "reasoning":
        pytest.skip("SMOKE_REASONING_FIELDS=reasoning")


@pytest.fixture
def key():
    if not KEY:
        pytest.skip("no API key given (SMOKE_API_KEY / SMOKE_API_KEY_FILE)")
    return KEY


def check_name(item) -> str:
    doc = (item.function.__doc__ or item.name).strip().splitlines()[0].rstrip(".")
    way = item.callspec.params.get("api", "") if hasattr(item, "callspec") else ""
    return f"{way}: {doc}" if way else doc


def pytest_collection_modifyitems(items):
    for item in items:
        item.user_properties.append(("check", check_name(item)))


def pytest_runtest_logreport(report):
    name = dict(report.user_properties).get("check", report.nodeid)
    if report.failed or (report.when == "call") or (report.skipped and report.when == "setup"):
        if _RESULTS.get(name, ("",))[0] == "failed":
            return  # a teardown after a failure keeps the failure
        reason = report.longrepr[2].removeprefix("Skipped: ") if report.skipped else ""
        _RESULTS[name] = (report.outcome, reason)


def pytest_collectreport(report):
    if report.failed:
        _RESULTS[f"collect {report.nodeid}"] = ("failed", "")


def pytest_terminal_summary(terminalreporter):
    w = terminalreporter.write_line
    for name, (outcome, reason) in _RESULTS.items():
        w({"passed": "ok   ", "failed": "FAIL ", "skipped": "skip "}[outcome] + name
          + (f" ({reason})" if reason else ""))  # fmt: skip
    count = {o: sum(1 for r in _RESULTS.values() if r[0] == o) for o in ("passed", "failed")}
    skipped = [f"{n} ({r[1]})" for n, r in _RESULTS.items() if r[0] == "skipped"]
    w(f"smoke: {count['passed']} passed, {count['failed']} failed against {BASE} (model {MODEL})"
      + (f"; skipped: {'; '.join(skipped)}" if skipped else ""))  # fmt: skip
