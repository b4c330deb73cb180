"""Host-side commands read the settings as Compose does (the environment over .env over the
registry's defaults) and say where each came from; a misspelt setting in .env is reported with the
nearest one, and a bad line with its own number (Compose names the end of the file for a quote that
never closes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from scripts.doctor import collect
from scripts.stack.compose import Compose, ComposeError
from scripts.stack.env import EnvFile, HostEnv
from scripts.stack.settings import BY_NAME, problems
from tests.conftest import ROOT
from tests.test_doctor import FAIL, OK, environ, gpu_host

pytestmark = pytest.mark.native  # Compose resolves the settings (docker compose config)

UNCLOSED = (
    '# a comment\nMODEL_ID=Qwen/Qwen3-8B\n# another\nSERVED_MODEL_NAME="Qwen3 x\nA=1\n# end\n'
)


@pytest.mark.unit
def test_scan_names_lines_and_the_first_bad_line():
    text = (
        "# c\n\nexport MODEL_SOURCE=huggingface\nMAX_MODEL_LEN=4096  # inline\n"
        'SERVED_MODEL_NAME="two\nlines"\nSERVE_EXTRA_ARGS=\'--x "y"\'\nHF_ENDPOINT=${M:-x}\n'
    )
    f = EnvFile.scan(text)
    assert f.error == "" and f.lines == {
        "MODEL_SOURCE": 3, "MAX_MODEL_LEN": 4, "SERVED_MODEL_NAME": 5, "SERVE_EXTRA_ARGS": 7,
        "HF_ENDPOINT": 8,
    }  # fmt: skip
    assert EnvFile.scan(UNCLOSED).error == "line 4: SERVED_MODEL_NAME's \" quote never closes"
    assert EnvFile.scan('A="a \\" b"\nB=2\n').lines == {"A": 1, "B": 2}  # an escaped quote
    assert EnvFile.scan("A=1\nMAX_MODEL_LEN 8192\n").error.startswith("line 2: not NAME=VALUE")


@pytest.mark.unit
def test_unknown_names_name_the_nearest_setting_and_leave_foreign_ones_alone():
    f = EnvFile.scan("MAX_MODEL_LENGTH=4096\nSERVED_MODEL=x\nMY_OWN=1\nCOMPOSE_PROFILES=m\n"
                     "HTTPS_PROXY=http://p\nNVIDIA_VISIBLE_DEVICES=0\n")  # fmt: skip
    assert f.typos() == {
        "MAX_MODEL_LENGTH": "MAX_MODEL_LENGTH (.env line 1) is not a setting; did you mean "
        "MAX_MODEL_LEN? fix it in .env",
        "SERVED_MODEL": "SERVED_MODEL (.env line 2) is not a setting; did you mean "
        "SERVED_MODEL_NAME? fix it in .env",
    }
    assert set(f.unknown()) == {"MAX_MODEL_LENGTH", "SERVED_MODEL", "MY_OWN"}
    assert "no service gets it" in f.unknown()["MY_OWN"]


def test_host_env_gives_each_value_and_its_source(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text(
        "# c\nMAX_MODEL_LEN=4096\nSERVED_MODEL_NAME=Qwen3-8B-local\nHF_TOKEN=hf_x\n"
    )
    h = HostEnv.read(
        Compose(
            env_file=env_file, environ={"PATH": "/usr/bin:/bin", "SERVED_MODEL_NAME": "from-shell"}
        )
    )
    rows = {r["name"]: r for r in h.rows()}
    assert rows["MAX_MODEL_LEN"] == {"name": "MAX_MODEL_LEN", "value": "4096",
                                     "source": ".env line 2"}  # fmt: skip
    assert rows["SERVED_MODEL_NAME"] == {"name": "SERVED_MODEL_NAME", "value": "from-shell",
                                         "source": "environment"}  # fmt: skip
    assert rows["HF_TOKEN"]["value"] == "***"
    assert rows["MODEL_ID"] == {"name": "MODEL_ID", "value": BY_NAME["MODEL_ID"].default,
                                "source": "default"}  # fmt: skip


def test_host_env_stops_without_the_plugin_and_at_the_bad_line(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("MAX_MODEL_LEN=4096\n")
    no_plugin = {"PATH": os.environ["PATH"], "DOCKER_CONFIG": str(tmp_path)}  # no cli-plugins/
    with pytest.raises(ComposeError, match="Compose plugin is missing.*docker-compose-plugin"):
        HostEnv.read(Compose(env_file=env_file, environ=no_plugin))
    env_file.write_text(UNCLOSED)
    with pytest.raises(ComposeError, match="^.env line 4: SERVED_MODEL_NAME's"):
        HostEnv.read(Compose(env_file=env_file))


def test_doctor_names_a_misspelt_setting_and_the_line_of_an_unclosed_quote(tmp_path):
    def settings_row(text):
        env_file = tmp_path / ".env"
        env_file.write_text(text)
        rows = collect(gpu_host(tmp_path), environ(tmp_path), env_file)
        return next(r for r in rows if r.check == "settings")

    row = settings_row("MAX_MODEL_LENGTH=4096\n")
    assert row.status == FAIL and "did you mean MAX_MODEL_LEN?" in row.detail, row
    row = settings_row("MY_OWN_THING=1\n")
    assert row.status == OK and "MY_OWN_THING (.env line 1) is not a setting" in row.detail, row
    row = settings_row(UNCLOSED)
    assert row.status == FAIL and ".env line 4: SERVED_MODEL_NAME's \" quote" in row.detail, row


def run_host(tmp_path, *cmd: str, env_file_text: str | None = None, **env: str):
    """A host command from the checkout with .env.example as the user's .env (COMPOSE_ENV_FILES:
    the developer's own .env stays out of it), on this GPU-less machine."""
    env_file = tmp_path / "user.env"
    env_file.write_text(env_file_text if env_file_text is not None
                        else (ROOT / ".env.example").read_text())  # fmt: skip
    clean = {
        k: v for k, v in os.environ.items() if k not in BY_NAME and not k.startswith("COMPOSE")
    }
    return subprocess.run(
        [sys.executable, "-m", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**clean, "COMPOSE_ENV_FILES": str(env_file), **env},
    )  # fmt: skip


def test_replicas_runs_on_the_shipped_settings(tmp_path):
    """.env copied from .env.example: replicas read the containers' view (the secret's path), not
    the host's relative API_KEY_FILE, which it refused as 'must be an absolute path'."""
    r = run_host(tmp_path, "scripts.replicas", "-f", "compose.yaml", "-f", "compose.cpu.yaml",
                 "--out", "-")  # fmt: skip
    assert r.returncode == 0 and "vllm-0:" in r.stdout, r.stderr
    r = run_host(tmp_path, "scripts.replicas", "--out", "-")  # the GPU file, on no GPU
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "cannot list this host's GPUs" in r.stderr and "fix:" in r.stderr
    r = run_host(tmp_path, "scripts.replicas", "-f", "compose.yaml", "-f", "compose.cpu.yaml",
                 "--out", "-", env_file_text="MAX_MODEL_LENGTH=4096\n")  # fmt: skip
    assert r.returncode == 2 and "did you mean MAX_MODEL_LEN?" in r.stderr, r.stderr
    r = run_host(tmp_path, "scripts.replicas", "--out", "-", DOCKER_CONFIG=str(tmp_path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "Compose plugin is missing" in r.stderr and "unknown shorthand" not in r.stderr


def test_serve_print_on_a_host_is_the_containers_command(tmp_path):
    """No weights, no GPU, no vLLM here: the command the vllm container would run for the .env,
    in `vllm serve` form on the GPU tracks (the track's own vLLM decides the flags), and one line
    on what was not checked. (It used to stop: "no completed download", ignoring .env.)"""
    example = (ROOT / ".env.example").read_text()
    r = run_host(tmp_path, "scripts.serve", "--print")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("vllm serve /models/Qwen/Qwen3-8B --served-model-name Qwen3-8B ")
    assert "--fingerprint-mode" not in r.stdout  # TRACK=cu124: vLLM 0.19.1 has no such flag
    assert r.stderr.count("\n") == 1 and "not checked on this host" in r.stderr, r.stderr
    r = run_host(tmp_path, "scripts.serve", "--print",
                 env_file_text=example + "TRACK=cu130\nMAX_MODEL_LEN=4096\n")  # fmt: skip
    assert r.returncode == 0 and "--max-model-len 4096 " in r.stdout, r.stderr
    assert r.stdout.rstrip().endswith("--fingerprint-mode none"), r.stdout  # vLLM 0.26.0
    r = run_host(tmp_path, "scripts.serve", "--print", env_file_text="MAX_MODEL_LEN=8k\n")
    assert r.returncode == 2 and "MAX_MODEL_LEN='8k' must be a whole number" in r.stderr


MEMORY = "must be a size like 64g or 512m"
ADDRESS = "must be an IP address of this host, e.g. 127.0.0.1 or 0.0.0.0"


@pytest.mark.unit
@pytest.mark.parametrize(
    "name, why, bad, good",
    [("SERVE_MEMORY_LIMIT", MEMORY, ["lots", "0", "64gb", "-1g"], ["64g", "512m", "1073741824"]),
     ("BIND_ADDRESS", ADDRESS, ["localhost:80", "0.0.0.0:80", "256.1.1.1"], ["127.0.0.1", "::1"])],
)  # fmt: skip
def test_compose_settings_are_checked_before_compose_sees_them(name, why, bad, good):
    """Compose would say "mem_limit invalid size: 'lots'" or "invalid IP address", naming neither
    the setting nor the fix; doctor and every host command say it with the registry's words."""
    for value in bad:
        assert problems({name: value}, (name,)) == {name: f"{name}={value!r} {why}; fix it in .env"}
    assert all(problems({name: v}, (name,)) == {} for v in good)
