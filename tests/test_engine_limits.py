"""scripts/engine_limits.py: the engine's open-files limit, measured on this machine's real engine
(hard limit 20000 here) and judged from recorded answers of other engines."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from scripts import engine_limits as el

IMAGE_LS = ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]


def recorded(answers: dict[str, tuple[int, str, str]], images: str):
    """A `run` that answers `docker image ls` with `images` and `docker run ... IMAGE ...` with
    answers[IMAGE]; it records the calls."""
    calls = []

    def run(argv, timeout):
        calls.append(list(argv))
        if list(argv) == IMAGE_LS:
            return 0, images, ""
        image = argv[argv.index("--entrypoint") + 2]
        return answers[image]

    run.calls = calls
    return run


@pytest.mark.unit
@pytest.mark.parametrize(
    ("soft", "hard", "status"),
    [("1024", "524288", "OK"), ("1048576", "1048576", "OK"), ("65535", "65535", "OK"),
     ("unlimited", "unlimited", "OK"), ("20000", "20000", "WARN"), ("1024", "4096", "WARN")],
)  # fmt: skip
def test_verdict_from_recorded_engines(soft, hard, status):
    run = recorded({"qwen3-vllm-stack:cu124": (0, f"{soft}\n{hard}\n", "")},
                   "busybox:1\nqwen3-vllm-stack:cu124\n")  # fmt: skip
    got, detail, fix = el.check(run)
    assert got == status, detail
    assert run.calls[1][-3:] == ["qwen3-vllm-stack:cu124", "-c", el.PROBE], run.calls
    if status == "WARN":
        assert f"hard limit for open files is {hard}" in detail and "LimitNOFILE" in fix
    else:
        assert fix == "" and "qwen3-vllm-stack:cu124" in detail


@pytest.mark.unit
def test_measure_moves_on_from_an_image_without_a_shell_and_says_when_it_cannot():
    run = recorded(
        {"distroless:1": (127, "", 'exec: "sh": executable file not found in $PATH'),
         "debian:12": (0, "20000\n20000\n", "")},
        "<none>:<none>\ndistroless:1\ndebian:12\n",
    )  # fmt: skip
    assert el.measure(run, ["qwen3-vllm-stack:cu124"]) == (20000, 20000, "debian:12")
    status, detail, fix = el.check(recorded({}, ""))
    assert status == "WARN" and "no local image" in detail and "docker compose build" in fix
    bad = recorded({"a:1": (0, "lots\n", "")}, "a:1\n")
    status, detail, _ = el.check(bad, [])
    assert status == "WARN" and "could not measure" in detail and "a:1" in detail


@pytest.mark.stack
def test_this_engine_limit_and_why_compose_yaml_sets_none():
    """The real engine: check() reports the limit a container gets (compared with /proc inside
    one), and where it is below 65535 a fixed `nofile: 65535` fails with runc's message while a
    container without ulimits starts."""
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True,
                                                        timeout=60).returncode:  # fmt: skip
        pytest.skip("no Docker engine")
    soft, hard, image = el.measure()
    if hard is None:
        pytest.skip(f"no local image to measure with: {image}")
    status, detail, fix = el.check()
    proc = subprocess.run(
        ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--entrypoint", "cat",
         image, "/proc/self/limits"],
        capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    row = next(ln.split()[3:5] for ln in proc.splitlines() if ln.startswith("Max open files"))
    assert [el.parse_limit(x) for x in row] == [soft, hard]
    print(f"\nthis engine: {status}: {detail}")
    fixed = subprocess.run(
        ["docker", "run", "--rm", "--pull", "never", "--network", "none", "--ulimit",
         f"nofile={el.TARGET}:{el.TARGET}", "--entrypoint", "true", image],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if hard < el.TARGET:
        assert status == "WARN" and f"is {hard} (soft {soft}) < 65535" in detail, detail
        assert "systemctl edit containerd.service" in fix
        assert fixed.returncode != 0 and "error setting rlimit" in fixed.stderr, fixed.stderr
        print(f"`--ulimit nofile=65535:65535` on this engine: {fixed.stderr.strip()[-160:]}")
    else:
        assert status == "OK" and fixed.returncode == 0, (detail, fixed.stderr)


@pytest.mark.unit
def test_cli_prints_the_row(monkeypatch, capsys):
    monkeypatch.setattr(el, "run_command", recorded({"x:1": (0, "20000\n20000\n", "")}, "x:1\n"))
    assert el.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("nofile limit: WARN: the engine's hard limit") and "fix: raise" in out
