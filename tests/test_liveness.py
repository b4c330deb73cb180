"""The vllm container's healthcheck (scripts/liveness.py): a busy engine is healthy however long
its queue, an idle one answers a one-token probe, a hung one (no progress, no answer) is ended
after HANG_TIMEOUT and not before. The decision against scripted looks (unit), the counters and
the probe against each served vLLM (native); the heal itself, a stopped engine in the compose
stack restarted by its own healthcheck, is in tests/test_compose.py."""

from __future__ import annotations

import time

import httpx
import pytest

from scripts import liveness
from scripts.liveness import Engine, State, check
from scripts.stack.settings import SettingsError, load
from tests.conftest import ROOT

METRICS = ROOT / "tests/fixtures/metrics/h100-vllm-0.26.0.txt"


class Looks:
    """What the check sees of an engine, one scripted look at a time: /health's status, the
    progress counters, the probe's outcome; records how often the probe was sent."""

    def __init__(self, health=200, progress=(0.0,), answers=True):
        self._health, self._progress, self._answers = health, list(progress), answers
        self.probes = 0

    def health(self):
        return self._health

    def progress(self):
        return self._progress.pop(0) if len(self._progress) > 1 else self._progress[0]

    def answers(self):
        self.probes += 1
        return self._answers


def looks_until(engine, state, timeout, every=10.0, until=300.0):
    """Check every `every` s from t=0 to `until`: [(t, healthy, end)]"""
    out, t = [], 0.0
    while t <= until:
        healthy, _, end = check(engine, state, timeout, t)
        out.append((t, healthy, end))
        if end:
            break
        t += every
    return out


@pytest.mark.unit
def test_the_counters_are_vllms_tokens_prefilled_and_generated():
    page = METRICS.read_text()  # a real vLLM 0.26.0 page from an H100 run
    assert liveness.progress(page) == 89.0 + 3232.0  # prompt_tokens_total + generation_tokens
    two = page + 'vllm:generation_tokens_total{engine="1",model_name="Qwen3-8B"} 10.0\n'
    assert liveness.progress(two) == 89.0 + 3232.0 + 10.0  # data parallel: every engine
    assert liveness.progress("# no vLLM here\nprocess_cpu_seconds_total 3.0\n") is None


@pytest.mark.unit
def test_a_busy_engine_is_healthy_however_long_its_probe_would_wait():
    """Counters that advance between looks: healthy past any window, and no probe is sent
    (it would queue behind the load)."""
    busy = Looks(progress=[float(i * 500) for i in range(100)], answers=False)
    state = State("start")
    seen = looks_until(busy, state, timeout=30, until=400)
    assert all(healthy and not end for _, healthy, end in seen), seen
    assert busy.probes == 0


@pytest.mark.unit
def test_a_slow_engine_whose_counters_move_while_the_probe_waits_is_no_hang():
    """Counters still between two looks, the probe unanswered, but the counters moved while it
    waited (a load that just came, a starved host): healthy, no stall begun (HealthGate would
    take a loaded replica out, the other replicas would take its load: a cascade)."""
    slow = Looks(progress=[100.0, 100.0, 140.0], answers=False)  # up, the look, after the probe
    state = State("start")
    assert check(slow, state, 60, 0.0)[0]  # up
    healthy, seen, end = check(slow, state, 60, 10.0)
    assert (healthy, end, state.stalled_since) == (True, False, None), seen
    assert slow.probes == 1 and state.progress == 140.0


@pytest.mark.unit
def test_a_hung_engine_is_ended_after_the_window_and_not_before():
    hung = Looks(progress=[100.0], answers=False)  # /health 200, counters still, no answer
    state = State("start")
    seen = looks_until(hung, state, timeout=60)
    assert seen[0][1:] == (True, False)  # up
    ended = [t for t, _, end in seen if end]
    # the first look without progress at t=10; 60 s later it is ended, not a look before
    assert ended == [70.0], seen
    assert all(not healthy for t, healthy, _ in seen if t >= 10)


@pytest.mark.unit
def test_an_api_server_that_stops_answering_is_ended_too_but_not_while_it_starts():
    starting = Looks(health=None)
    state = State("start")
    seen = looks_until(starting, state, timeout=60, until=1200)  # 20 min loading
    assert not any(end for *_, end in seen) and not state.up
    starting._health = 200
    assert check(starting, state, 60, 1210)[0]
    starting._health = None  # up once, then no answer at all
    assert [t for t, _, end in looks_until(starting, state, 60) if end] == [60.0]


@pytest.mark.unit
def test_an_idle_engine_answers_the_probe_and_a_refused_probe_ends_nothing():
    idle = Looks(progress=[7.0])
    state = State("start")
    seen = looks_until(idle, state, timeout=20, until=200)
    assert all(healthy and not end for _, healthy, end in seen) and idle.probes == len(seen) - 1
    refused = Looks(progress=[7.0], answers=None)  # a 4xx: the probe says nothing
    assert not any(end for *_, end in looks_until(refused, State("s"), 20, until=200))


@pytest.mark.unit
def test_progress_clears_a_stall_and_off_means_health_alone():
    engine = Looks(progress=[5.0] * 7 + [9.0], answers=False)  # read twice by a stalled look
    state = State("start")
    seen = looks_until(engine, state, timeout=60, until=100)
    assert not any(end for *_, end in seen)  # the counters moved at t=40: the stall is over
    assert state.stalled_since == 50.0  # and the next stall counts from its own start
    off = Looks(progress=[1.0], answers=False)
    assert not any(end for *_, end in looks_until(off, State("s"), timeout=0, until=600))
    assert off.probes == 0


@pytest.mark.unit
def test_a_restarted_container_starts_with_a_fresh_state(tmp_path, monkeypatch):
    monkeypatch.setattr(liveness, "STATE", tmp_path / "state.json")
    State("111", up=True, progress=5.0, stalled_since=3.0).write()
    assert State.read("111").stalled_since == 3.0
    assert State.read("222") == State("222")  # another start of PID 1: nothing carried over
    (tmp_path / "state.json").write_text("{torn")
    assert State.read("111") == State("111")


@pytest.mark.unit
@pytest.mark.parametrize("raw", ["5", "-1", "soon", "3601"])
def test_hang_timeout_below_one_look_is_refused(raw):
    with pytest.raises(SettingsError, match="HANG_TIMEOUT="):
        load({"HANG_TIMEOUT": raw})
    assert load({"HANG_TIMEOUT": "0"}).hang_timeout == 0


@pytest.mark.native
def test_the_check_reads_this_vllms_counters_and_probes_it(vllm_server):
    """Against the served vLLM (each version in `tests/run versions`): the counters exist and
    advance with a real request, the probe is a completion this vLLM answers."""
    base = vllm_server["base_url"]
    s = load({"SERVE_PORT": base.rsplit(":", 1)[1], "API_KEY_FILE": str(vllm_server["key_file"])})
    engine, state = Engine(s), State("start")
    assert check(engine, state, 60, 0.0)[:2] == (True, "up: /health answers 200")
    before = engine.progress()
    assert before is not None, "no vllm:prompt_tokens_total / generation_tokens_total"
    r = httpx.post(
        base + "/v1/completions",
        headers={"Authorization": f"Bearer {vllm_server['key']}"},
        json={"model": "Qwen3-8B", "prompt": "hello", "max_tokens": 8, "ignore_eos": True},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    time.sleep(1)  # vLLM records an iteration's counters just after it answers
    healthy, seen, end = check(engine, state, 60, 10.0)
    assert healthy and not end and seen.startswith("busy: the engine did"), seen
    assert engine.progress() >= before + 8
    time.sleep(1)
    healthy, seen, end = check(engine, state, 60, 20.0)  # nothing since: the probe answers
    assert (healthy, seen, end) == (True, "idle: the engine answers a one-token completion", False)


@pytest.mark.native
def test_vllms_health_says_503_while_the_check_finds_the_engine_stalled(vllm_server):
    """HealthGate inside the served vLLM: the check's state says stalled (as a check writes it
    in the container's /tmp, here the host's), and vLLM's /health answers 503 with the reason,
    so that the router and the gateway see it; a fresh state, and it is vLLM's 200 again."""
    base = vllm_server["base_url"]
    assert httpx.get(base + "/health", timeout=10).status_code == 200
    assert not liveness.STATE.exists(), f"{liveness.STATE} is someone else's"
    try:
        State(liveness.container_start(), True, 5.0, time.monotonic() - 12).write()
        r = httpx.get(base + "/health", timeout=10)
        assert r.status_code == 503, (r.status_code, r.text)
        assert "no progress for 12s" in r.json()["error"]["message"], r.text
        State("another start", True, 5.0, time.monotonic() - 12).write()  # a restart since
        assert httpx.get(base + "/health", timeout=10).status_code == 200
        State(liveness.container_start(), True, 9.0, None).write()  # progress again
        assert httpx.get(base + "/health", timeout=10).status_code == 200
    finally:
        liveness.STATE.unlink(missing_ok=True)


@pytest.mark.unit
def test_dockers_timeout_leaves_the_check_its_four_reads(tmp_path):
    """compose.yaml's healthcheck timeout covers /health, /metrics, the probe and /metrics again
    at their longest: a check that Docker cuts off counts as failed, whatever it saw."""
    from scripts import k8s

    _, _, wiring = k8s.read({}, tmp_path / "no.env")
    _, timeout = wiring.healthcheck("vllm")
    assert timeout >= 3 * liveness.HEALTH_WAIT_S + liveness.PROBE_WAIT_S + 5, timeout
