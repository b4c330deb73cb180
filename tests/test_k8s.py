"""The Kubernetes manifests (scripts/k8s.py): every object validates against the Kubernetes schemas
offline and strictly (PyPI kubernetes-validate), the objects refer to each other correctly, the
vllm container gets the settings compose gives its `vllm` service (so `scripts.serve` builds the
same vLLM argument list), nothing secret is written, and bad input stops with one line. No
cluster is involved: what a cluster would still check (admission, scheduling, pulling, a real
start) is not tested here."""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import utils as kv

from scripts import k8s, liveness
from scripts.stack.settings import load
from scripts.stack.vllm_args import build_args
from tests.conftest import ROOT

pytestmark = pytest.mark.unit

# The oldest and the newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships (the manifests
# use nothing newer than 1.25: Pod Security labels, fsGroupChangePolicy, seccompProfile).
K8S_VERSIONS = ("1.25.0", "1.37.0")
COMBOS = {
    "defaults": {},
    "tp2-gpu4": {"GPU_COUNT": "4", "TENSOR_PARALLEL_SIZE": "2", "SERVE_PROFILE": "throughput",
                 "TRACK": "cu130", "PREFLIGHT": "0"},
    "huggingface": {
        "MODEL_SOURCE": "huggingface", "HF_ENDPOINT": "https://hf-mirror.example",
        "MAX_MODEL_LEN": "16384", "SERVE_EXTRA_ARGS": "--max-num-seqs 64",
        "SHUTDOWN_TIMEOUT": "120", "GATEWAY_RATE": "5", "DOWNLOAD_PROGRESS_INTERVAL": "30",
    },
}  # fmt: skip
KINDS = ["Namespace", "Service", "Service", "StatefulSet", "NetworkPolicy", "ConfigMap",
         "Deployment", "Service"]  # fmt: skip


def generate(tmp_path: Path, env: dict[str, str], *flags: str) -> subprocess.CompletedProcess:
    """The CLI as a user runs it, with only these settings (no .env, nothing inherited)."""
    clean = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env}
    argv = [sys.executable, "-m", "scripts.k8s", "--env-file", str(tmp_path / "no.env"), *flags]
    return subprocess.run(argv, env=clean, cwd=ROOT, capture_output=True, text=True, timeout=60)


def objects(env: dict[str, str], *flags: str) -> list[dict]:
    """The objects, in process (what the CLI writes, before YAML)."""
    opts = k8s.parser().parse_args(["--env-file", "/nonexistent/.env", *flags])
    return k8s.manifests(env, opts)


def find(objs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(hits) == 1, f"{kind} {name}: {len(hits)} objects"
    return hits[0]


def pod_spec(objs: list[dict], kind: str) -> dict:
    return find(objs, kind)["spec"]["template"]["spec"]


def plain_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


# --- the schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("combo", COMBOS)
def test_generated_manifests_validate_strictly(tmp_path, combo, version):
    out = tmp_path / "k8s"
    r = generate(tmp_path, COMBOS[combo], "--out", str(out))
    assert r.returncode == 0, r.stderr
    docs = [d for f in sorted(out.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    assert [d["kind"] for d in docs] == KINDS  # the Namespace first: `kubectl apply -f DIR`
    for doc in docs:  # strict: an unknown (misspelt) field anywhere fails, as kubectl would
        assert kv.validate(doc, version, strict=True) == version.rsplit(".", 1)[0]
    assert len(docs) == 8


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda c, s: c.update(readinesProbe=c.pop("readinessProbe")), "'readinesProbe' was unexp"),
        (lambda c, s: s.update(replicas="1"), "'1' is not of type 'integer'"),
        (
            lambda c, s: c["securityContext"]["capabilities"].update(drop="ALL"),
            "not of type 'array'",
        ),
        (lambda c, s: s.pop("selector"), "'selector' is a required property"),
    ],
)
def test_a_broken_manifest_fails_validation(break_it, message):
    sts = find(objects({}), "StatefulSet")
    kv.validate(sts, K8S_VERSIONS[0], strict=True)  # whole, it passes
    broken = copy.deepcopy(sts)
    break_it(broken["spec"]["template"]["spec"]["containers"][0], broken["spec"])
    with pytest.raises(kv.ValidationError, match=message):
        kv.validate(broken, K8S_VERSIONS[0], strict=True)


def test_yaml_round_trips_and_run_sh_stays_a_literal_block():
    """PyYAML writes the YAML: what it reads back is what was dumped, in the same key order, and
    a multi-line string such as the ConfigMap's run.sh is a readable `|` block."""
    script = (ROOT / "gateway" / "run.sh").read_text()
    shared = {"drop": ["ALL"]}
    tricky = {
        "words": ["yes", "No", "on", "null", "~", "y", "true", "0.90", "8", "", "-", "1e3"],
        "text": ["a: b", "#x", " lead", "trail ", "*ref", "&a", "@x", "{}", "[1]", "é", "a\tb"],
        "lines": ["one\ntwo\n", "no end\nnewline", "trailing \nspace\n", "two\n\n", "\n"],
        "nested": [{"a": [1, 2.5, True, None], "b": {}}, [], {"c": [{"d": "e"}]}],
        "nvidia.com/gpu": "4",
        "z-last": "x " * 80,  # one line, not folded
        "shared": [shared, shared],  # written twice, not as an &anchor and its *alias
        "script": script,
    }
    text = k8s.dump_all([tricky, {"b": 1}])
    docs = list(yaml.safe_load_all(text))
    assert docs == [tricky, {"b": 1}] and list(docs[0]) == list(tricky)
    assert text.startswith("---\n") and "\n---\nb: 1\n" in text
    assert "\nscript: |\n  #!/bin/sh\n" in text  # run.sh stays readable in its ConfigMap
    assert "\nz-last: " in text and "\n  x x" not in text
    assert "&id0" not in text and "*id0" not in text
    assert text.count("\n  - drop:\n      - ALL") == 2
    cm = find(objects({}), "ConfigMap")
    assert cm["data"]["run.sh"] == script


def test_without_pyyaml_it_stops_with_one_line_naming_the_install(tmp_path):
    """-S: no site-packages, so no PyYAML (the host's python3 without python3-yaml)."""
    out = tmp_path / "k8s"
    r = subprocess.run(
        [sys.executable, "-S", "-m", "scripts.k8s", "--env-file", str(tmp_path / "no.env"),
         "--out", str(out)],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and r.stdout == "" and not out.exists(), r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("k8s: PyYAML is not installed")
    assert "sudo apt-get install python3-yaml" in r.stderr
    assert "python3 -m pip install pyyaml" in r.stderr


# --- what the objects say ---------------------------------------------------------------------


def compose_config(env: dict[str, str], tmp_path: Path) -> dict:
    """compose.yaml resolved by Compose itself (`config` needs no engine)."""
    binary = shutil.which("docker-compose") or str(Path(sys.prefix) / "bin" / "docker-compose")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    clean = {"PATH": "/usr/bin:/bin", "API_KEY_FILE": "/dev/null",
             "GRAFANA_ADMIN_PASSWORD_FILE": "/dev/null", **env}  # fmt: skip
    r = subprocess.run(
        [binary, "--env-file", str(empty), "-f", "compose.yaml", "config", "--format", "json"],
        env=clean, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("combo", COMBOS)
def test_vllm_gets_composes_settings_and_arguments(tmp_path, combo):
    env = COMBOS[combo]
    objs = objects(env)
    spec = pod_spec(objs, "StatefulSet")
    serve, download = spec["containers"][0], spec["initContainers"][0]
    services = compose_config(env, tmp_path)["services"]
    for container, service in ((serve, "vllm"), (download, "download")):
        ours, theirs = plain_env(container), services[service]["environment"]
        # every variable we set, compose sets to the same value (compose also spells defaults)
        assert {k: theirs.get(k) for k in ours} == ours, service
        assert container["command"] == services[service]["command"]
    args = build_args(load(plain_env(serve)))
    assert args == build_args(load(services["vllm"]["environment"]))
    sts = find(objs, "StatefulSet")
    assert sts["metadata"]["annotations"]["qwen3-vllm-stack/vllm-args"] == shlex.join(args)
    gpus = str(load(env).gpu_count)
    reserved = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]["count"]
    assert serve["resources"]["limits"]["nvidia.com/gpu"] == gpus == str(reserved)
    if combo == "tp2-gpu4":
        assert "--data-parallel-size 2" in shlex.join(args)
        assert plain_env(serve)["PREFLIGHT"] == "0" and serve["image"] == "qwen3-vllm-stack:cu130"
    gateway = plain_env(pod_spec(objs, "Deployment")["containers"][0])
    theirs = services["gateway"]["environment"]
    for k in k8s.GATEWAY_ENV:  # a limit set in .env reaches the gateway as in compose
        assert gateway.get(k, theirs[k]) == theirs[k], k
    assert gateway.get("GATEWAY_RATE") == env.get("GATEWAY_RATE")
    hf = [e for e in download["env"] if e["name"] == "HF_TOKEN"]
    secret = {"name": k8s.HF_TOKEN_SECRET, "key": "token", "optional": True}
    want = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": secret}}]
    assert hf == (want if combo == "huggingface" else [])


@pytest.mark.parametrize("combo", COMBOS)
def test_objects_refer_to_each_other(combo):
    """What the schemas cannot see and a cluster would: names, selectors, ports, volumes."""
    objs = objects(COMBOS[combo], "--namespace", "llm", "--replicas", "2")
    assert {o["metadata"].get("namespace", "llm") for o in objs} == {"llm"}
    # Kubernetes turns a Service name into NAME_PORT=tcp://... variables: none may be VLLM_*
    assert not [o for o in objs if o["metadata"]["name"].upper().startswith("VLLM")]
    pods = {}
    for kind in ("StatefulSet", "Deployment"):
        w = find(objs, kind)
        labels = w["spec"]["template"]["metadata"]["labels"]
        assert w["spec"]["selector"]["matchLabels"].items() <= labels.items()
        spec = w["spec"]["template"]["spec"]
        volumes = {v["name"] for v in spec["volumes"]}
        volumes |= {c["metadata"]["name"] for c in w["spec"].get("volumeClaimTemplates", [])}
        for c in spec.get("initContainers", []) + spec["containers"]:
            mounts = [m["name"] for m in c["volumeMounts"]]
            assert set(mounts) <= volumes and len(mounts) == len(set(mounts)), c["name"]
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                if probe in c and "exec" not in c[probe]:
                    action = c[probe].get("httpGet") or c[probe]["tcpSocket"]
                    assert action["port"] in ports, (c["name"], probe)
        pods[kind] = (labels, spec)
    assert find(objs, "StatefulSet")["spec"]["replicas"] == 2
    sts_labels, sts_spec = pods["StatefulSet"]
    gw_labels, gw_spec = pods["Deployment"]
    for name, labels in (("qwen3-vllm", sts_labels), ("qwen3-vllm-pods", sts_labels),
                         ("qwen3-gateway", gw_labels)):  # fmt: skip
        svc = find(objs, "Service", name)
        assert svc["spec"]["selector"].items() <= labels.items()
        assert all(p["targetPort"] == "http" for p in svc["spec"]["ports"])
    assert find(objs, "StatefulSet")["spec"]["serviceName"] == "qwen3-vllm-pods"
    vllm_port = find(objs, "Service", "qwen3-vllm")["spec"]["ports"][0]["port"]
    upstream = plain_env(gw_spec["containers"][0])["GATEWAY_UPSTREAM"]
    assert upstream == f"qwen3-vllm.llm.svc.cluster.local:{vllm_port}"
    policy = find(objs, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= sts_labels.items()
    assert (
        policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"].items() <= gw_labels.items()
    )
    assert policy["ingress"][0]["ports"][0]["port"] == vllm_port
    config = find(objs, "ConfigMap")["metadata"]["name"]
    assert {"name": config, "defaultMode": 0o444} == next(
        v["configMap"] for v in gw_spec["volumes"] if "configMap" in v
    )
    for spec in (sts_spec, gw_spec):
        key = next(v["secret"] for v in spec["volumes"] if v["name"] == "api-key")
        assert key["secretName"] == k8s.API_KEY_SECRET and key["items"][0]["path"] == "api_key"
        env = plain_env(spec["containers"][0])
        assert "/run/secrets/api_key" in (env.get("API_KEY_FILE"), env.get("GATEWAY_KEYS_FILE"))


@pytest.mark.parametrize("combo", COMBOS)
def test_pods_are_locked_down_and_probes_fit_a_cold_start(tmp_path, combo):
    objs = objects(COMBOS[combo])
    services = compose_config(COMBOS[combo], tmp_path)["services"]
    ns = find(objs, "Namespace")["metadata"]["labels"]
    assert ns["pod-security.kubernetes.io/enforce"] == "restricted"
    for kind, service in (("StatefulSet", "vllm"), ("Deployment", "gateway")):
        spec = pod_spec(objs, kind)
        sc = spec["securityContext"]
        uid, gid = map(int, services[service]["user"].split(":"))  # compose's `user: uid:gid`
        assert sc["runAsNonRoot"] and sc["runAsUser"] == uid > 0
        assert sc["runAsGroup"] == sc["fsGroup"] == gid
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert spec["enableServiceLinks"] is False
        for c in spec.get("initContainers", []) + spec["containers"]:
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] and csc["capabilities"]["drop"] == ["ALL"]
            assert csc["allowPrivilegeEscalation"] is False and csc["privileged"] is False
            assert "memory" in c["resources"]["limits"]
    spec = pod_spec(objs, "StatefulSet")
    serve = spec["containers"][0]
    s = load(plain_env(serve))
    startup = serve["startupProbe"]
    compose_start = services["vllm"]["healthcheck"]
    minutes = int(compose_start["start_period"].split("m")[0])  # "20m0s"
    assert startup["failureThreshold"] * startup["periodSeconds"] >= max(minutes * 60, 1800)
    for probe in ("startupProbe", "readinessProbe"):
        assert serve[probe]["httpGet"]["path"] == "/health"
    # liveness: the healthcheck's progress check, which fails only past HANG_TIMEOUT; a look
    # (/health, /metrics, a one-token probe: up to 5 s each) fits the probe's timeout
    live = serve["livenessProbe"]
    assert live["exec"]["command"] == ["python", "-m", "scripts.liveness", "--no-end"]
    assert live["timeoutSeconds"] >= 3 * liveness.HEALTH_WAIT_S and live["failureThreshold"] <= 3
    assert int(compose_start["timeout"].rstrip("s")) >= live["timeoutSeconds"]
    assert spec["terminationGracePeriodSeconds"] > s.shutdown_timeout
    shm = next(v for v in spec["volumes"] if v["name"] == "shm")
    assert shm["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m for m in serve["volumeMounts"]}
    assert mounts["/models"]["readOnly"] and mounts["/dev/shm"]["name"] == "shm"
    assert "readOnly" not in next(
        m for m in spec["initContainers"][0]["volumeMounts"] if m["mountPath"] == "/models"
    )


OVERRIDE = """\
services:
  download:
    user: "20005:20006"
    mem_limit: 3g
  vllm:
    image: registry.example/qvs:custom
    user: "20001:20002"
    shm_size: 2g
    stop_grace_period: 1m45s
    tmpfs: !override ["/tmp:size=2g", "/home/vllm:size=32m,uid=20001"]
  gateway:
    image: registry.example/nginx:1
    user: "20003:20004"
    stop_grace_period: 2m
    mem_limit: 128m
    tmpfs: !override ["/tmp:size=16m,mode=0700"]
    environment: {GATEWAY_LISTEN: "8181"}
    ports: !override ["127.0.0.1:${HOST_PORT:-8000}:8181"]
"""


def test_the_manifests_follow_compose_yaml(tmp_path):
    """The images, users, /dev/shm, memory limits, tmpfs sizes, grace periods and the gateway's
    ports are written once, in compose.yaml: an override that Compose merges (COMPOSE_FILE) and
    the settings it interpolates (HOST_PORT, SERVE_MEMORY_LIMIT) move the manifests with them."""
    (tmp_path / "override.yaml").write_text(OVERRIDE)
    env = {"COMPOSE_FILE": f"compose.yaml:{tmp_path / 'override.yaml'}", "HOST_PORT": "9000",
           "SERVE_MEMORY_LIMIT": "48g", "SHUTDOWN_TIMEOUT": "50"}  # fmt: skip
    r = generate(tmp_path, env)
    assert r.returncode == 0, r.stderr
    objs = list(yaml.safe_load_all(r.stdout))
    spec = pod_spec(objs, "StatefulSet")
    (download,), (serve,) = spec["initContainers"], spec["containers"]
    sc = spec["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (20001, 20002, 20002)
    assert download["securityContext"]["runAsUser"] == 20005  # its own user, in the vllm pod
    assert download["securityContext"]["runAsGroup"] == 20006
    assert "runAsUser" not in serve["securityContext"]  # the pod's
    assert (download["image"], serve["image"]) == (
        "qwen3-vllm-stack:cu124",
        "registry.example/qvs:custom",
    )
    volumes = {v["name"]: v["emptyDir"]["sizeLimit"] for v in spec["volumes"] if "emptyDir" in v}
    assert volumes == {"tmp": "2Gi", "home": "32Mi", "shm": "2Gi"}
    assert download["resources"]["limits"]["memory"] == "3Gi"
    assert download["resources"]["requests"]["memory"] == "3Gi"
    assert serve["resources"]["limits"]["memory"] == "48Gi"
    # compose's 105 s were sized for SHUTDOWN_TIMEOUT's default 30: the same 75 s beyond 50
    assert spec["terminationGracePeriodSeconds"] == 125
    gw = pod_spec(objs, "Deployment")
    (nginx,) = gw["containers"]
    sc = gw["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (20003, 20004, 20004)
    assert gw["terminationGracePeriodSeconds"] == 120
    assert nginx["resources"]["limits"]["memory"] == "128Mi"
    assert [v["emptyDir"]["sizeLimit"] for v in gw["volumes"] if v["name"] == "tmp"] == ["16Mi"]
    assert nginx["ports"] == [{"name": "http", "containerPort": 8181}]
    assert nginx["image"] == "registry.example/nginx:1"
    assert plain_env(nginx)["GATEWAY_LISTEN"] == "8181"
    assert find(objs, "Service", "qwen3-gateway")["spec"]["ports"][0]["port"] == 9000
    assert "port-forward svc/qwen3-gateway 9000:9000" in r.stderr
    for doc in objs:  # a container's own runAsUser included
        kv.validate(doc, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize(
    "override, needle",
    [
        ('vllm: {user: "vllm"}', "services.vllm.user='vllm' must be a numeric uid:gid"),
        ('gateway: {user: "0:0"}', "services.gateway.user='0:0' must be a numeric uid:gid"),
        ("vllm: {stop_grace_period: 30s}", "services.vllm.stop_grace_period (30 s) must exceed"),
        ("vllm: {shm_size: !reset null}", "services.vllm.shm_size is not set"),
    ],
)
def test_compose_wiring_the_pods_cannot_take_stops_with_one_line(tmp_path, override, needle):
    (tmp_path / "override.yaml").write_text(f"services:\n  {override}\n")
    r = generate(tmp_path, {"COMPOSE_FILE": f"compose.yaml:{tmp_path / 'override.yaml'}"})
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("k8s: compose: "), r.stderr
    assert needle in r.stderr and r.stderr.endswith("; fix compose.yaml\n"), r.stderr


def test_no_secret_is_written(tmp_path):
    key = "k8s-test-key-" + "x" * 40
    (tmp_path / "api_key").write_text(key + "\n")
    env = {"API_KEY_FILE": str(tmp_path / "api_key"), "HF_TOKEN": "hf_not_for_manifests",
           "MODEL_SOURCE": "huggingface"}  # fmt: skip
    r = generate(tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert key not in r.stdout + r.stderr and "hf_not_for_manifests" not in r.stdout + r.stderr
    assert "kind: Secret" not in r.stdout
    # the way to make it is printed instead, reading the file compose reads
    assert f"create secret generic qwen3-api-key --from-file=api_key={tmp_path}/api_key" in r.stderr
    assert "qwen3-hf-token" in r.stderr


def test_stdout_and_out_dir_agree(tmp_path):
    r = generate(tmp_path, {}, "--namespace", "llm", "--image", "registry.example/qvs:cu124")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "k8s"
    assert generate(tmp_path, {}, "--namespace", "llm", "--out", str(out)).returncode == 0
    r2 = generate(tmp_path, {}, "--namespace", "llm", "--no-namespace", "--out", str(out),
                  "--image", "registry.example/qvs:cu124")  # fmt: skip
    assert r2.returncode == 0 and "wrote 7 objects" in r2.stdout
    files = sorted(out.glob("*.yaml"))
    assert [f.name for f in files][0] == "00-service-qwen3-vllm.yaml"  # no stale namespace file
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text())]
    assert docs == list(yaml.safe_load_all(r.stdout))[1:]
    images = {c["image"] for d in docs if d["kind"] == "StatefulSet"
              for c in d["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert images == {"registry.example/qvs:cu124"}


@pytest.mark.native  # git check-ignore
def test_the_readmes_out_dir_stays_out_of_git():
    """The README's `--out k8s/` writes into the checkout: the files are the user's output (like
    .env), so git ignores them: `git status` stays clean and `git pull` never meets them."""
    section = (ROOT / "README.md").read_text().split("\n## Kubernetes\n", 1)[1].split("\n## ")[0]
    dirs = set(re.findall(r"python3 -m scripts\.k8s .*--out (\S+)", section))
    assert dirs == {"k8s/"}, dirs
    names = [k8s.file_name(i, o) for i, o in enumerate(objects({}))]
    for d in dirs:
        paths = [d + name for name in names]
        r = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT,
                           capture_output=True, text=True, timeout=30)  # fmt: skip
        assert r.returncode == 0 and r.stdout.split() == paths, r.stdout + r.stderr


@pytest.mark.parametrize(
    "env, flags, needle",
    [
        ({"GPU_COUNT": "3", "TENSOR_PARALLEL_SIZE": "2"}, [], "GPU_COUNT=3 is not a multiple"),
        ({"MAX_MODEL_LEN": "8k"}, [], "MAX_MODEL_LEN='8k' must be a whole number"),
        ({"MAX_MODEL_LEN": "8k", "MODEL_SOURCE": "hf"}, [], "MODEL_SOURCE='hf' must be one of"),
        ({"MODEL_ID": "Qwen/Qwen3-32B"}, [], "MODEL_ID=Qwen/Qwen3-32B: its size is not known"),
        ({"SERVE_MEMORY_LIMIT": "lots"}, [], "SERVE_MEMORY_LIMIT='lots' must be a size"),
        ({}, ["--namespace", "Bad_NS"], "argument --namespace: 'Bad_NS' must be a DNS label"),
        ({}, ["--image", "no such image"], "argument --image: 'no such image' is not an image"),
        ({}, ["--replicas", "0"], "argument --replicas: '0' must be a whole number"),
        ({}, ["--models-size", "40GB"], "argument --models-size: '40GB' must be a size"),
        ({"TRACK": "cu999"}, [], "TRACK='cu999' must be one of cu124, cu130"),
        ({"HOST_PORT": "80800"}, [], "HOST_PORT='80800' must be between 1 and 65535"),
        ({"SERVE_MEMORY_LIMIT": "0"}, [], "SERVE_MEMORY_LIMIT='0' must be a size"),
    ],
)
def test_bad_input_stops_with_one_line(tmp_path, env, flags, needle):
    r = generate(tmp_path, env, *flags)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("k8s: "), r.stderr
    assert needle in r.stderr and ("fix" in r.stderr or "--help" in r.stderr), r.stderr


def test_bad_env_file_line_is_named(tmp_path):
    (tmp_path / "no.env").write_text("MAX_MODEL_LEN 8192\n")
    r = generate(tmp_path, {})
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "line 1" in r.stderr, r.stderr


def test_env_file_is_read_as_compose_reads_it(tmp_path):
    """.env as Compose reads it: the environment wins, a comment after a value is no value."""
    (tmp_path / "no.env").write_text("MAX_MODEL_LEN=16384\nMODEL_REVISION=v1.0  # a tag\n")
    r = generate(tmp_path, {"MAX_MODEL_LEN": "4096"})
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    assert "--max-model-len 4096 " in r.stdout
    assert "value: v1.0\n" in r.stdout and "a tag" not in r.stdout


@pytest.mark.parametrize("missing", ["plugin", "docker"])
def test_without_compose_it_stops_with_one_line_and_writes_nothing(tmp_path, missing):
    """No `docker compose` (a host with Debian's docker-compose 1.29 only, or no Docker at all):
    .env cannot be read as Compose reads it, so nothing is made from the defaults instead."""
    bin_dir, config = tmp_path / "bin", tmp_path / "docker-config"  # no cli-plugins/ there
    bin_dir.mkdir()
    env = {"PATH": str(bin_dir), "DOCKER_CONFIG": str(config)}
    if missing == "plugin":
        (bin_dir / "docker").symlink_to(shutil.which("docker"))
        probe = subprocess.run(["docker", "compose", "version"], env=env, capture_output=True)
        if probe.returncode == 0:
            pytest.skip("a Compose plugin is installed system-wide here: no host without it")
    (tmp_path / "no.env").write_text("MAX_MODEL_LEN=16384\n")
    out = tmp_path / "k8s"
    r = generate(tmp_path, env, "--out", str(out))
    assert r.returncode == 2 and r.stdout == "" and not out.exists(), r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and "warning" not in r.stderr, r.stderr
    if missing == "plugin":
        assert r.stderr.startswith("k8s: the Docker Compose plugin is missing"), r.stderr
        assert "sudo apt-get install docker-compose-plugin" in r.stderr, r.stderr
    else:
        assert r.stderr.startswith("k8s: the docker command is not installed"), r.stderr
        assert "https://docs.docker.com/engine/install/" in r.stderr, r.stderr
