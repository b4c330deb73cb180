"""The gateway (gateway/run.sh: nginx) in front of the real CPU vLLM server, as native processes:
the same script and config as the `gateway` service, with Debian's nginx.

- every route vLLM registers (its OpenAPI document) without a key or with a wrong one: never 200
- 300+ hostile requests generated with hypothesis: 4xx with a message, never 5xx
- slow-loris clients are cut off; 64 concurrent streams complete or get 429 + Retry-After
- a graceful stop (SIGQUIT) lets open streams finish
    python -m pytest tests/test_gateway.py -q -s
"""

from __future__ import annotations

import collections
import json
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import VERSION_FACTS, free_port
from tests.fixtures.gateway import Gateway, nginx_or_skip
from tests.fixtures.openapi_requests import MALFORMED, METHODS, error_problem, raw

ROOT = Path(__file__).resolve().parent.parent
MODEL = "Qwen3-8B"
MAX_MODEL_LEN = 8192  # the session server's (settings default)
MAX_N = 16  # settings default: VLLM_MAX_N_SEQUENCES
MAX_BODY = 4 * 1024 * 1024  # GATEWAY_MAX_BODY default (4m)
ALLOWED = {("GET", "/v1/models"), ("POST", "/v1/completions"), ("POST", "/v1/chat/completions")}
THINK = "我想问你，5的阶乘是多少？<think>\n"  # the scripted stand-in answers this one

pytestmark = pytest.mark.native


@pytest.fixture(scope="module")
def gateway(vllm_server, tmp_path_factory):
    nginx_or_skip()
    upstream = vllm_server["base_url"].removeprefix("http://")
    keys = [vllm_server["key"].strip(), secrets.token_urlsafe(32)]
    # rate limits out of the way here: the hostile requests must reach vLLM, not a 429
    # (test_64_concurrent_streams_complete_or_get_429 runs a gateway with the defaults)
    gw = Gateway(
        tmp_path_factory.mktemp("gateway"),
        upstream,
        keys,
        GATEWAY_RATE="100000",
        GATEWAY_BURST="100000",
    ).start()
    try:
        yield gw
    finally:
        gw.stop()
        print(f"\n--- gateway log (tail) ---\n{gw.log.read_text(errors='replace')[-1500:]}")


def error_message(r: httpx.Response) -> str:
    """The message of an OpenAI-style error body (vLLM's or the gateway's)."""
    try:
        body = r.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if body.get("message"):
            return str(body["message"])
        if isinstance(body.get("detail"), (str, list)):
            return str(body["detail"])
    return ""


# --------------------------------------------------------------------------------------------
# rendering: bad settings stop with the fix, nothing is started


@pytest.mark.native  # sh gateway/run.sh --render
@pytest.mark.parametrize(
    "setting, value, says",
    [
        ("GATEWAY_RATE", "fast", "GATEWAY_RATE=fast must be a whole number"),
        ("GATEWAY_BURST", "0", "GATEWAY_BURST=0 must be between 1 and 100000"),
        ("GATEWAY_MAX_BODY", "4 GB", "GATEWAY_MAX_BODY=4 GB must be a size like 4m"),
        ("GATEWAY_UPSTREAM", "vllm", "must be host:port"),
        ("GATEWAY_ROUTES", "/v1/models /tokenize/../x", "is not a plain path"),
        ("GATEWAY_KEYS_FILE", "/nonexistent/keys", "python3 -m scripts.init_secrets"),
        ("GATEWAY_NJS_MODULE", "/nonexistent/njs.so", "apt-get install libnginx-mod-http-js"),
    ],
)
def test_bad_settings_are_refused_with_the_fix(tmp_path, setting, value, says):
    nginx_or_skip()
    gw = Gateway(tmp_path, "127.0.0.1:9", [secrets.token_urlsafe(32)], **{setting: value})
    r = gw.script("--render")
    assert r.returncode == 2, r.stdout + r.stderr
    assert says in r.stderr and r.stderr.startswith("gateway: "), r.stderr


@pytest.mark.native  # sh gateway/run.sh --render
@pytest.mark.parametrize(
    "key, says",
    [("short", "use 16 or more"), ('bad"quote-in-a-long-key', "has characters other than")],
)
def test_weak_or_unsafe_keys_are_refused(tmp_path, key, says):
    nginx_or_skip()
    gw = Gateway(tmp_path, "127.0.0.1:9", [key])
    r = gw.script("--render")
    assert r.returncode == 2 and says in r.stderr, r.stderr
    assert key not in r.stderr, "the message must not echo the key"


@pytest.mark.native  # sh gateway/run.sh --render
def test_rendered_config_keeps_keys_private(tmp_path):
    nginx_or_skip()
    key = secrets.token_urlsafe(32)
    gw = Gateway(tmp_path, "127.0.0.1:9", [key])
    r = gw.script("--render")
    assert r.returncode == 0, r.stderr
    conf = Path(r.stdout.strip())
    files = sorted(p for p in conf.parent.iterdir() if p.is_file())
    assert any(key in p.read_text() for p in files), [p.name for p in files]
    assert all((p.stat().st_mode & 0o077) == 0 for p in files), [p.name for p in files]
    assert (conf.parent.stat().st_mode & 0o077) == 0
    assert key not in r.stderr + r.stdout


# --------------------------------------------------------------------------------------------
# authentication and the allowlist


def openapi_routes(base: str) -> list[tuple[str, str]]:
    doc = httpx.get(base + "/openapi.json", timeout=30).json()
    routes = []
    for path, ops in doc["paths"].items():
        concrete = re.sub(r"\{[^}]+\}", "x", path)
        routes += [(m.upper(), concrete) for m in ops if m in ("get", "post", "put", "delete")]
    return routes


def test_every_vllm_route_needs_the_key_and_only_the_allowlist_is_forwarded(gateway, vllm_server):
    routes = openapi_routes(vllm_server["base_url"])
    # routes mounted outside FastAPI's schema, and the docs themselves
    extra = [
        ("GET", p)
        for p in (
            "/metrics",
            "/openapi.json",
            "/docs",
            "/redoc",
            "/ping",
            "/version",
            "/server_info",
            "/load",
            "/v1/models/../../metrics",
            "//v1/models",
            "/v1/models%2F..%2F..%2Fmetrics",
        )
    ]
    extra += [
        ("POST", p)
        for p in (
            "/tokenize",
            "/detokenize",
            "/pause",
            "/resume",
            "/abort_requests",
            "/reset_prefix_cache",
            "/invocations",
        )
    ]
    assert len(routes) >= 10, f"only {len(routes)} routes in vLLM's OpenAPI document"
    table = collections.Counter()
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        for method, path in sorted(set(routes + extra)):
            allowed = (method, path) in ALLOWED or path == "/health"
            for label, headers in (
                ("no key", {}),
                # well-formed, the right length, not one of the keys
                ("wrong key", {"Authorization": f"Bearer {secrets.token_urlsafe(32)}"}),
            ):
                r = c.request(method, path, headers=headers, json={} if method == "POST" else None)
                if path == "/health":
                    assert r.status_code == 200, (method, path, label, r.status_code)
                    continue
                assert r.status_code in (401, 404), (method, path, label, r.status_code, r.text)
                assert r.status_code == 401 or not allowed
                assert error_message(r), (method, path, r.text)
                table[(label, r.status_code)] += 1
            # with the key: the allowlist is forwarded, everything else stays 404
            r = c.request(
                method, path, headers=gateway.auth(), json={} if method == "POST" else None
            )
            if not allowed:
                assert r.status_code == 404, (method, path, "key", r.status_code, r.text)
                table[("key, not allowlisted", 404)] += 1
    print(
        f"\n{len(set(routes))} OpenAPI routes + {len(extra)} more through the gateway: "
        + ", ".join(f"{k[0]} -> {k[1]}: {v}" for k, v in sorted(table.items()))
    )
    with httpx.Client(base_url=gateway.url, timeout=120) as c:
        for i in (0, 1):  # both keys work; vLLM sees its own
            models = c.get("/v1/models", headers=gateway.auth(i))
            assert models.status_code == 200 and models.json()["data"][0]["id"] == MODEL
        done = c.post(
            "/v1/completions",
            headers=gateway.auth(1),
            json={"model": MODEL, "prompt": THINK, "max_tokens": 64, "temperature": 0},
        )
        assert done.status_code == 200 and "120" in done.json()["choices"][0]["text"], done.text
        chat = c.post(
            "/v1/chat/completions",
            headers=gateway.auth(0),
            json={"model": MODEL, "messages": [{"role": "user", "content": THINK}]},
        )
        assert chat.status_code == 200 and "120" in chat.json()["choices"][0]["message"]["content"]
        assert c.get("/health").status_code == 200


def test_streaming_passes_through_unbuffered(gateway):
    """Server-sent events arrive as vLLM sends them: several chunks, not one buffered body."""
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": THINK}],
    }
    arrivals = []
    with httpx.stream(
        "POST", gateway.url + "/v1/chat/completions", json=body, headers=gateway.auth(), timeout=120
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                arrivals.append((time.monotonic(), line))
    assert arrivals[-1][1] == "data: [DONE]"
    assert len(arrivals) > 5
    spread = arrivals[-1][0] - arrivals[0][0]
    print(f"\nstream: {len(arrivals)} events over {spread * 1000:.0f} ms through the gateway")


# --------------------------------------------------------------------------------------------
# hostile input

N_HOSTILE = 320
ROUTES = st.sampled_from(["/v1/chat/completions", "/v1/completions"])
NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")
_words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
_not_number = _words.filter(
    lambda s: not NUMBER.fullmatch(s) and s.strip().lower() not in ("nan", "inf", "-inf", "+inf")
)
_junk = st.one_of(
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), min_size=1, max_size=3),
)
_finite = {"allow_nan": False, "allow_infinity": False}


def _chat(**extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}


def _completion(**extra) -> dict:
    return {"model": MODEL, "prompt": "hi", **extra}


def _case(category: str, routes, bodies) -> st.SearchStrategy:
    """(category, route, body bytes); dict bodies are sent as JSON."""
    encoded = bodies.map(lambda b: b if isinstance(b, bytes) else json.dumps(b).encode())
    return st.tuples(st.just(category), routes, encoded)


# each case must be refused with a 4xx and a message
_bad_json = st.one_of(
    st.binary(max_size=200).filter(lambda b: not b.strip().startswith(b"{")),
    st.text(max_size=80).map(lambda s: ("{" + s).encode()),
    st.sampled_from([b"", b"null", b"[]", b"1", b'"x"', b"{", b'{"model":']),
)
_wrong_type = st.one_of(
    st.builds(lambda v: _chat(max_tokens=v), st.one_of(_not_number, _junk)),
    st.builds(lambda v: _chat(temperature=v), st.one_of(_not_number, _junk)),
    st.builds(
        lambda v: {"model": MODEL, "messages": v},
        st.one_of(st.integers(), _words, st.lists(st.integers(), min_size=1, max_size=3)),
    ),
    st.builds(lambda v: _chat(n=v), st.one_of(_not_number, _junk)),
    st.builds(lambda v: _chat(stream=v), _junk),
    st.builds(lambda v: {"model": v, "messages": [{"role": "user", "content": "hi"}]}, _junk),
)
_out_of_range = st.one_of(
    st.builds(lambda v: _chat(temperature=v), st.floats(max_value=-0.01, **_finite)),
    st.builds(lambda v: _chat(top_p=v), st.floats(min_value=1.01, max_value=1e6)),
    st.builds(lambda v: _chat(max_tokens=v), st.integers(-(2**40), 0)),
    st.builds(lambda v: _chat(n=v), st.integers(-(2**40), 0)),
    st.builds(lambda v: _chat(presence_penalty=v), st.floats(min_value=2.01, max_value=1e9)),
    st.builds(lambda v: _chat(top_logprobs=v, logprobs=True), st.integers(10_000, 2**31)),
)
_unknown_fields = st.builds(
    lambda extra, n: {**_chat(n=n), **extra},
    st.dictionaries(st.from_regex(r"\Ax_[a-z]{1,8}\Z"), st.integers(), min_size=1, max_size=5),
    st.integers(-100, 0),
)
_other_model = st.from_regex(r"\A[a-z]{1,12}\Z").map(
    lambda m: {"model": m, "messages": [{"role": "user", "content": "hi"}]}
)
CHAT = st.just("/v1/chat/completions")
hostile = st.one_of(
    _case("bad json", ROUTES, _bad_json),
    _case("wrong type", CHAT, _wrong_type),
    _case(
        "huge max_tokens",
        ROUTES,
        st.integers(MAX_MODEL_LEN + 1, 2**62).map(lambda v: _completion(max_tokens=v)),
    ),
    _case(
        "prompt over context",
        ROUTES,
        st.integers(MAX_MODEL_LEN + 1, 3 * MAX_MODEL_LEN).map(
            lambda n: _completion(prompt=" hello" * n)
        ),
    ),
    _case(
        "n in the thousands",
        ROUTES,
        st.one_of(st.integers(1000, 100_000), st.integers(MAX_N + 1, 999)).map(
            lambda n: _chat(n=n, temperature=1.0)
        ),
    ),
    _case("out of range", CHAT, _out_of_range),
    # unknown fields with something wrong: unknown fields alone are ignored by vLLM (see
    # test_unknown_fields_alone_are_ignored)
    _case("unknown fields + bad value", CHAT, _unknown_fields),
    _case("unknown model", CHAT, _other_model),
)


def test_hostile_requests_get_4xx_never_5xx(gateway):
    seen: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    failures: list[str] = []
    client = httpx.Client(base_url=gateway.url, headers=gateway.auth(), timeout=120)

    @settings(
        max_examples=N_HOSTILE,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile)
    def one(case):
        category, route, body = case
        r = client.post(route, content=body, headers={"Content-Type": "application/json"})
        seen[category] += 1
        statuses[r.status_code] += 1
        if not (400 <= r.status_code < 500) or not error_message(r):
            failures.append(f"{category}: {route} {body[:120]!r} -> {r.status_code} {r.text[:200]}")

    try:
        t0 = time.monotonic()
        one()
        # oversized bodies: refused by the gateway before vLLM reads a byte
        for size in (MAX_BODY + 1, MAX_BODY * 2, MAX_BODY * 8):
            r = client.post(
                "/v1/chat/completions",
                content=b'{"model": "' + b"x" * size + b'"}',
                headers={"Content-Type": "application/json"},
            )
            seen["oversized body"] += 1
            statuses[r.status_code] += 1
            if r.status_code != 413 or "GATEWAY_MAX_BODY" not in error_message(r):
                failures.append(f"oversized {size}: {r.status_code} {r.text[:200]}")
        secs = time.monotonic() - t0
        after = client.post(
            "/v1/chat/completions",
            json=_chat(max_tokens=64, messages=[{"role": "user", "content": THINK}]),
        )
    finally:
        client.close()
    total = sum(seen.values())
    VERSION_FACTS["probe 5xx"] = str(sum(n for s, n in statuses.items() if s >= 500))
    print(
        f"\nhostile: {total} requests in {secs:.1f}s; by category: {dict(seen)}; statuses: "
        f"{dict(sorted(statuses.items()))}"
    )
    assert not failures, f"{len(failures)} answers were not a 4xx with a message:\n" + "\n".join(
        failures[:20]
    )
    assert total >= 300 and len(seen) >= 9, seen
    assert not any(s >= 500 for s in statuses)
    assert 429 not in statuses, "the rate limit answered instead of vLLM"
    assert after.status_code == 200 and "120" in after.json()["choices"][0]["message"]["content"]


def test_unknown_fields_alone_are_ignored(gateway):
    """vLLM accepts and ignores request fields it does not know (it logs them); the answer is a
    normal one, not an error. Documented in the README's Security section."""
    r = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=gateway.auth(),
        timeout=120,
        json=_chat(max_tokens=8, x_unknown=1, metadata_extra={"a": 1}),
    )
    assert r.status_code == 200, r.text


def test_slow_loris_clients_are_cut_off(gateway):
    """Clients that trickle their headers are disconnected (client_header_timeout 10 s) and do
    not starve others: a normal request is answered while they hang on."""
    socks, t0 = [], time.monotonic()
    for _ in range(40):
        s = socket.create_connection(("127.0.0.1", gateway.port), timeout=60)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    closed_at: dict[int, float] = {}

    def trickle():
        while len(closed_at) < len(socks) and time.monotonic() - t0 < 90:
            for i, s in enumerate(socks):
                if i in closed_at:
                    continue
                try:
                    s.sendall(b"X-a: b\r\n")
                    s.settimeout(0.01)
                    if s.recv(4096) == b"":
                        closed_at[i] = time.monotonic() - t0
                except TimeoutError:
                    pass
                except OSError:
                    closed_at[i] = time.monotonic() - t0
            time.sleep(1)

    th = threading.Thread(target=trickle)
    th.start()
    r = httpx.get(gateway.url + "/v1/models", headers=gateway.auth(), timeout=30)
    th.join()
    for s in socks:
        s.close()
    assert r.status_code == 200
    assert len(closed_at) == len(socks), (
        f"{len(socks) - len(closed_at)} slow clients still open after 90 s"
    )
    times = sorted(closed_at.values())
    print(
        f"\nslow-loris: {len(socks)} clients cut off after {times[0]:.1f}-{times[-1]:.1f}s; "
        "a normal "
        f"request meanwhile: {r.status_code} in {r.elapsed.total_seconds() * 1000:.0f} ms"
    )


# --------------------------------------------------------------------------------------------
# load and stop


def answer_tokens(events: list[str]) -> int | None:
    """completion_tokens from the usage chunk of a stream (stream_options.include_usage)."""
    for line in reversed(events):
        if line != "data: [DONE]" and (usage := json.loads(line[6:]).get("usage")):
            return usage["completion_tokens"]
    return None


def stream_chat(
    url: str, headers: dict, max_tokens: int, results: list, ignore_eos=False, opened=None
) -> None:
    body = {
        "model": MODEL,
        "stream": True,
        "max_tokens": max_tokens,
        "ignore_eos": ignore_eos,
        "stream_options": {"include_usage": True},  # the last chunk counts the answer's tokens
        "messages": [{"role": "user", "content": THINK}],
    }
    t0 = time.monotonic()
    try:
        with httpx.stream(
            "POST",
            url + "/v1/chat/completions",
            json=body,
            headers=headers,
            timeout=httpx.Timeout(300, connect=30),
        ) as r:
            if r.status_code != 200:
                r.read()
                results.append(
                    (
                        "rejected",
                        r.status_code,
                        r.headers.get("retry-after"),
                        error_message(r),
                        time.monotonic() - t0,
                    )
                )
                return
            events = []
            for ln in r.iter_lines():
                if ln.startswith("data: "):
                    events.append(ln)
                    if opened is not None and len(events) == 1:
                        opened.release()
            done = bool(events) and events[-1] == "data: [DONE]"
            tokens = answer_tokens(events)
            secs = time.monotonic() - t0
            results.append(("done" if done else "cut", 200, len(events), "", secs, tokens))
    except httpx.HTTPError as e:
        results.append(("error", 0, None, repr(e), time.monotonic() - t0))


def test_64_concurrent_streams_complete_or_get_429(vllm_server, tmp_path):
    """The default limits (32 at once and 20/s, burst 40, per key), 64 clients on one key."""
    nginx_or_skip()
    gateway = Gateway(
        tmp_path, vllm_server["base_url"].removeprefix("http://"), [vllm_server["key"].strip()]
    ).start()
    try:
        load_64_streams(gateway)
    finally:
        gateway.stop()


def load_64_streams(gateway: Gateway) -> None:
    results: list = []
    threads = [
        threading.Thread(target=stream_chat, args=(gateway.url, gateway.auth(), 64, results))
        for _ in range(64)
    ]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(360)
    secs = time.monotonic() - t0
    assert not any(t.is_alive() for t in threads), "a client hung"
    kinds = collections.Counter(r[0] for r in results)
    rejected = [r for r in results if r[0] == "rejected"]
    done = [r for r in results if r[0] == "done"]
    print(
        f"\nload: 64 streaming clients on one key in {secs:.1f}s: {dict(kinds)}; "
        f"slowest stream {max((r[4] for r in done), default=0):.1f}s"
    )
    assert len(results) == 64
    assert set(kinds) <= {"done", "rejected"}, results
    assert len(done) >= 1
    for r in rejected:
        assert r[1] == 429 and r[2] == "1" and "too many requests" in r[3], r
    # after the burst the key is usable again
    ok = httpx.get(gateway.url + "/v1/models", headers=gateway.auth(), timeout=30)
    assert ok.status_code == 200


def test_graceful_stop_lets_streams_finish(vllm_server, tmp_path):
    """SIGQUIT (the gateway's stop_signal in compose.yaml): nginx stops accepting, lets the open
    streams run to [DONE], then exits."""
    nginx_or_skip()
    gw = Gateway(
        tmp_path, vllm_server["base_url"].removeprefix("http://"), [vllm_server["key"].strip()]
    ).start()
    results: list = []
    opened = threading.Semaphore(0)
    threads = [
        threading.Thread(target=stream_chat, args=(gw.url, gw.auth(), 300, results, True, opened))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for _ in threads:  # every stream has its first event: they are open
        assert opened.acquire(timeout=120), f"a stream did not start: {results}"
    t_stop = time.monotonic()
    gw.proc.send_signal(signal.SIGQUIT)
    time.sleep(0.5)
    refused = True
    try:
        httpx.get(gw.url + "/health", timeout=5)
        refused = False
    except httpx.HTTPError:
        pass
    for t in threads:
        t.join(300)
    code = gw.stop(timeout=120)
    exited = time.monotonic() - t_stop
    kinds = collections.Counter(r[0] for r in results)
    print(
        f"\ngraceful stop: {dict(kinds)} streams; events per stream "
        f"{[r[2] for r in results]}, tokens {[r[5] for r in results]}; "
        f"nginx exited {code} {exited:.1f}s after SIGQUIT"
    )
    assert kinds == {"done": 4}, results
    assert all(r[5] == 300 for r in results), results  # every answer arrived whole
    assert refused, "new connections are refused once the stop began"
    assert code == 0


def test_tls_with_the_users_certificate(vllm_server, tmp_path):
    """tls.crt + tls.key in GATEWAY_TLS_DIR: HTTPS only, with that certificate."""
    nginx_or_skip()
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    tls = tmp_path / "tls"
    tls.mkdir()
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(tls / "tls.key"),
            "-out",
            str(tls / "tls.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    gw = Gateway(
        tmp_path,
        vllm_server["base_url"].removeprefix("http://"),
        [vllm_server["key"].strip()],
        GATEWAY_TLS_DIR=str(tls),
    ).start()
    try:
        url = f"https://127.0.0.1:{gw.port}"
        with httpx.Client(verify=str(tls / "tls.crt"), timeout=60) as c:
            assert c.get(url + "/v1/models", headers=gw.auth()).json()["data"][0]["id"] == MODEL
            assert c.get(url + "/v1/models").status_code == 401
        health = gw.script("--health")
        assert health.returncode == 0, health.stderr
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{gw.port}/health", timeout=10).raise_for_status()
    finally:
        gw.stop()
    assert "listening on https" in gw.log.read_text()


def test_upstream_down_is_a_clean_503(tmp_path):
    """vLLM not answering (starting, restarting, crashed): 503 with Retry-After and a JSON
    message, not nginx's 502 page."""
    nginx_or_skip()
    gw = Gateway(tmp_path, f"127.0.0.1:{free_port()}", [secrets.token_urlsafe(32)]).start()
    try:
        for path in ("/health", "/v1/models"):
            r = httpx.get(gw.url + path, headers=gw.auth(), timeout=30)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert r.headers["retry-after"] == "5" and "retry after 5 s" in error_message(r)
    finally:
        gw.stop()
    assert '"GET /v1/models" 503' in gw.log.read_text()


# --------------------------------------------------------------------------------------------
# issue #18: what an attacker's probe found. Each test fails on the gateway before the fix.


def test_unparseable_requests_and_other_methods_get_json_4xx(gateway):
    """Request lines nginx cannot parse, HTTP/2 and /3 request lines, bad bodies and every method
    on every route: a 4xx with an OpenAI-style JSON error, never nginx's HTML or a 5xx."""
    statuses: collections.Counter = collections.Counter()
    problems = []
    for data in MALFORMED:
        status, body = raw("127.0.0.1", gateway.port, data)
        statuses[status] += 1
        if status == "closed" or (why := error_problem(status, body)):
            problems.append(f"{data[:60]!r}: {why or status}")
    for route in ("/v1/models", "/v1/completions", "/v1/chat/completions", "/health", "/x"):
        for method in METHODS:
            req = f"{method} {route} HTTP/1.1\r\nHost: x\r\n{gateway.auth_line()}Connection: close"
            status, body = raw("127.0.0.1", gateway.port, (req + "\r\n\r\n").encode())
            statuses[f"{method} {status}"] += 1
            why = None if method == "HEAD" else error_problem(status, body)
            if status == "closed" or why:
                problems.append(f"{method} {route}: {why or status}")
    print(f"\nmalformed requests and methods: {dict(sorted(statuses.items()))}")
    assert not problems, "\n".join(problems)


def test_key_must_match_exactly(gateway):
    """The key is compared case-sensitively (nginx map strings ignore case); the scheme's case
    does not matter (RFC 9110)."""
    key = gateway.keys[0]
    i = next(i for i, ch in enumerate(key) if ch.isalpha())
    near = {
        "case swapped": key.swapcase(),
        "one letter's case": key[:i] + key[i].swapcase() + key[i + 1 :],
        "one more character": key + "a",
        "one less": key[:-1],
        "in quotes": f'"{key}"',
    }
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        for label, wrong in near.items():
            assert wrong != key, label
            r = c.get("/v1/models", headers={"Authorization": f"Bearer {wrong}"})
            assert r.status_code == 401, (label, r.status_code)
            assert r.headers["www-authenticate"].startswith("Bearer"), label
        for scheme in ("Bearer", "bearer", "BEARER"):
            r = c.get("/v1/models", headers={"Authorization": f"{scheme} {key}"})
            assert r.status_code == 200, (scheme, r.status_code, r.text)


def traceback_count(vllm_server) -> int:
    return Path(vllm_server["log"]).read_text(errors="replace").count("Traceback")


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_wrong_typed_structured_outputs_is_a_400_not_a_crash(gateway, vllm_server, route):
    """vLLM (0.19.1 to 0.32.0 at least) answers 500 with a traceback when structured_outputs is
    a list, string, number or boolean; the gateway refuses those with a 400 naming the field.
    An object or null still reaches vLLM."""
    base = _chat() if route == "/v1/chat/completions" else _completion()
    before = traceback_count(vllm_server)
    with httpx.Client(base_url=gateway.url, headers=gateway.auth(), timeout=120) as c:
        for value in ([], [1], "x", "", 0, 1.5, True, False):
            r = c.post(route, json={**base, "max_tokens": 4, "structured_outputs": value})
            assert r.status_code == 400, (value, r.status_code, r.text)
            assert r.json()["error"]["param"] == "structured_outputs", r.text
            assert "must be an object" in error_message(r)
        r = c.post(route, json={**base, "max_tokens": 4, "structured_outputs": None})
        assert r.status_code == 200, r.text
        r = c.post(route, json={**base, "max_tokens": 4, "structured_outputs": {}})
        assert r.status_code == 400 and "none are specified" in error_message(r), r.text  # vLLM's
        for body, says in (
            (b"[1, 2]", "must be a JSON object"),
            (b'"x"', "must be a JSON object"),
            (b"{", "not valid JSON"),
            (b"", "empty"),
            (b"[" * 40 + b"]" * 40, "not valid JSON"),  # deeper than njs parses
        ):
            r = c.post(route, content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == 400 and says in error_message(r), (body[:20], r.text)
    assert traceback_count(vllm_server) == before, "vLLM logged a traceback"


def test_health_takes_get_or_head_without_a_body(gateway):
    """/health needs no key, so it takes nothing: another method is a 405 with Allow, a body is a
    400 answered at once (not read, not forwarded), and a client trickling a body is cut off."""
    with httpx.Client(base_url=gateway.url, timeout=60) as c:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            r = c.request(method, "/health", content=b"x")
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", (method, r.text)
            assert error_message(r), r.text
        big = b"x" * 3_900_000
        r = c.request("GET", "/health", content=big)
        assert r.status_code == 400 and "no request body" in error_message(r), r.text
        assert c.head("/health").status_code == 200
        assert c.get("/health").status_code == 200
    # headers announce 1000 bytes; one byte comes, then one every 0.2 s
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=30) as s:
        t0 = time.monotonic()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
        answer = s.recv(4096)  # before the body is complete (the old gateway waited for it)
        answered = time.monotonic() - t0
        sent, closed = 1, None
        while sent < 1000:
            try:
                s.sendall(b"x")
                sent += 1
                s.settimeout(0.2)
                if s.recv(4096) == b"":
                    closed = time.monotonic() - t0
                    break
            except TimeoutError:
                continue
            except OSError:
                closed = time.monotonic() - t0
                break
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert closed is not None and sent < 1000, f"still open after {sent} of 1000 bytes"
    print(
        f"\n/health with a trickled body: 400 after {answered * 1000:.0f} ms, connection closed "
        f"after {closed:.1f}s and {sent} of 1000 bytes"
    )
    log = gateway.log.read_text(errors="replace")
    assert '"GET /health" 400' in log and "upstream=-" in log


def test_health_is_not_a_quota_one_client_can_use_up(gateway):
    """Every client behind Docker's proxy has one address: a per-address limit let one client
    make a load balancer's probe fail. /health is answered from a one-second cache instead:
    however many ask, all get 200 and vLLM sees about one request a second."""
    before = gateway.log.read_text(errors="replace").count('"GET /health"')
    statuses: collections.Counter = collections.Counter()

    def probe():
        with httpx.Client(base_url=gateway.url, timeout=60) as c:
            for _ in range(25):
                statuses[c.get("/health").status_code] += 1

    t0 = time.monotonic()
    threads = [threading.Thread(target=probe) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    secs = time.monotonic() - t0
    time.sleep(0.5)  # the access log lines of the last answers
    log = gateway.log.read_text(errors="replace")
    lines = [ln for ln in log.splitlines() if '"GET /health"' in ln][before:]
    upstream = sum(1 for ln in lines if "upstream=200" in ln)
    print(
        f"\n/health: {sum(statuses.values())} requests from 16 clients in {secs:.1f}s: "
        f"{dict(statuses)}; {upstream} reached vLLM"
    )
    assert statuses == {200: 400}, statuses
    assert len(lines) == 400 and upstream < 400 // 4, (len(lines), upstream)


def test_request_ids_are_the_gateways(gateway):
    """A client's X-Request-Id (or request_id in the body) never reaches vLLM: the gateway sends
    its own, unique one, returns it in X-Request-Id, and vLLM's answer id carries it."""
    ids = []
    with httpx.Client(base_url=gateway.url, headers=gateway.auth(), timeout=120) as c:
        for _ in range(2):
            r = c.post(
                "/v1/chat/completions",
                headers={"X-Request-Id": "chosen-by-client"},
                json=_chat(max_tokens=4, request_id="chosen-by-client"),
            )
            assert r.status_code == 200, r.text
            rid = r.headers["x-request-id"]
            assert re.fullmatch(r"[0-9a-f]{32}", rid), rid
            assert r.json()["id"] == f"chatcmpl-{rid}", (r.json()["id"], rid)
            ids.append(rid)
        assert re.fullmatch(r"[0-9a-f]{32}", c.get("/v1/models").headers["x-request-id"])
    assert ids[0] != ids[1]


def test_answers_disclose_no_version_and_no_server_folder(gateway, vllm_server):
    """system_fingerprint carries no vLLM version (scripts/serve passes --fingerprint-mode none
    where vLLM has it), streamed or not; /v1/models shows each model's id as its root, not the
    folder it was loaded from."""
    import vllm

    with httpx.Client(base_url=gateway.url, headers=gateway.auth(), timeout=120) as c:
        models = c.get("/v1/models")
        assert models.status_code == 200, models.text
        for m in models.json()["data"]:
            assert m["root"] == m["id"] == MODEL, m
        assert "/models" not in models.text and "/tmp" not in models.text, models.text
        texts = [c.post("/v1/chat/completions", json=_chat(max_tokens=4)).text]
        texts.append(c.post("/v1/completions", json=_completion(max_tokens=4)).text)
        with c.stream("POST", "/v1/chat/completions", json=_chat(max_tokens=8, stream=True)) as r:
            texts += [ln for ln in r.iter_lines() if ln.startswith("data: {")]
    for text in texts:
        assert vllm.__version__ not in text, text[:300]
        assert json.loads(text.removeprefix("data: ")).get("system_fingerprint") is None, text


def test_query_strings_reach_no_log(vllm_server, tmp_path):
    """A key in a query string (a client's mistake) is refused at once: it reaches neither
    vLLM nor a log line, also when the per-key limit is being hit (nginx writes the request
    line of a limited request to its error log)."""
    nginx_or_skip()
    key = vllm_server["key"].strip()
    gw = Gateway(
        tmp_path, vllm_server["base_url"].removeprefix("http://"), [key], GATEWAY_RATE="1",
        GATEWAY_BURST="1",
    ).start()  # fmt: skip
    marker = "sk-" + secrets.token_hex(16)
    statuses: collections.Counter = collections.Counter()
    vllm_log = Path(vllm_server["log"])
    vllm_before = len(vllm_log.read_bytes())
    try:
        with httpx.Client(base_url=gw.url, headers=gw.auth(), timeout=60) as c:
            for i in range(12):
                q = f"?api_key={marker}" if i % 2 else f"?key={marker}&x=1"
                r = c.get("/v1/models" + q)
                statuses[r.status_code] += 1
                assert r.status_code == 400 and "query strings" in error_message(r), r.text
                statuses[c.get("/v1/models").status_code] += 1  # the limit, hit
    finally:
        gw.stop()
    log = gw.log.read_text()
    print(f"\nquery strings with a limit being hit: {dict(statuses)}")
    assert statuses[429] > 0, statuses
    assert "limiting requests" in log  # the error log writes a request line here
    assert marker not in log
    assert marker not in vllm_log.read_bytes()[vllm_before:].decode(errors="replace")
