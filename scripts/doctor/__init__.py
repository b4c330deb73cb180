"""Host preflight: run before `docker compose up` to learn, in one table, what would stop the stack
on this machine and the exact fix for each problem.

    python3 -m scripts.doctor            # from the repo root, with the host's plain python3
    python3 -m scripts.doctor --json     # the rows as JSON

Asks Compose for the settings (scripts/stack/compose.py: the variables it interpolates with and what
it gives each service), validates them with scripts/stack/settings.py (settings_row.py), then runs
the steps in steps.py: the Docker engine, the Compose plugin and the NVIDIA container runtime
(engine.py), the driver against TRACK and the GPUs against TENSOR_PARALLEL_SIZE/GPU_COUNT and the
model (gpu.py, model.py), disk space where Docker keeps its volumes (disk.py), the host port and the
model hub (network.py), and the API key file (api_key.py). report.py prints them. Exit status: 0
without FAIL rows, 1 with any, 2 on a usage error.

Every fact about the machine comes through `host.Host` (tests pass a recorded one), parsed once
in `facts.Facts`; the checks themselves are scripts/checks/. Nothing is built, pulled or changed.
"""

from scripts.doctor.cli import main
from scripts.doctor.steps import collect

__all__ = ["collect", "main"]
