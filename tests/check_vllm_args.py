"""Parse the argument lists that scripts/serve builds with the installed vLLM's own server parser,
for every profile and device. Exits non-zero, naming the profile and vLLM's error, if any list
is refused. Runs without a GPU (a GPU build is told it is on the CPU platform: parsing only).

    python -m tests.check_vllm_args
"""

from __future__ import annotations

import json
import sys


def make_parser():
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser  # vLLM >= 0.3x
    except ImportError:
        from vllm.entrypoints.openai.cli_args import make_arg_parser  # vLLM 0.19 .. 0.26
    from vllm import platforms
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    if not platforms.current_platform.device_type:  # GPU build on a machine without a GPU
        from vllm.platforms.cpu import CpuPlatform

        platforms.current_platform = CpuPlatform()
    return make_arg_parser(FlexibleArgumentParser())


def cases():
    from scripts.serve import PROFILE_FLAGS
    from scripts.settings import load

    for device in ("cuda", "cpu"):
        for profile in PROFILE_FLAGS:
            if device == "cpu" and profile == "fp8":
                continue
            # GPU_COUNT=4 with TP=2: two data-parallel replicas (--data-parallel-size 2)
            env = {"SERVE_DEVICE": device, "SERVE_PROFILE": profile, "TENSOR_PARALLEL_SIZE": "2",
                   "GPU_COUNT": "4", "API_KEY_FILE": "/run/secrets/api_key"}  # fmt: skip
            yield f"{device}/{profile}", load(env)


def main() -> int:
    import vllm

    from scripts.serve import build_args

    failures = {}
    checked = 0
    for name, settings in cases():
        parser = make_parser()
        argv = build_args(settings)
        try:
            ns = parser.parse_args(argv)
        except SystemExit as e:  # argparse reports on stderr and exits 2
            failures[name] = f"refused (exit {e.code}): {argv}"
            continue
        assert ns.max_model_len == settings.max_model_len, name
        assert ns.served_model_name == [settings.served_model_name], name
        assert ns.tensor_parallel_size == 2, name
        assert ns.data_parallel_size == settings.data_parallel_size, name
        checked += 1
    print(json.dumps({"vllm": vllm.__version__, "accepted": checked, "refused": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
