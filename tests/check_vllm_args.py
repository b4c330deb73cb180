"""Parse the argument lists that scripts/vllm_args builds with the installed vLLM's own parsers,
for every profile and device: the module entry point's (`--model`) and `vllm serve MODEL`'s (the
form every GPU start uses, the model moved to the front). Also checks that the preflight memory
estimate reads the same fp8 weights / fp8 KV cache that vLLM parses from the list. Exits
non-zero, naming the profile and the problem, if any list is refused or disagrees. Runs without a
GPU (a GPU build is told it is on the CPU platform: parsing only).

    python -m tests.check_vllm_args
"""

from __future__ import annotations

import json
import sys


def platform_for_parsing() -> None:
    from vllm import platforms

    if not platforms.current_platform.device_type:  # GPU build on a machine without a GPU
        from vllm.platforms.cpu import CpuPlatform

        platforms.current_platform = CpuPlatform()


def server_parser():
    try:
        from vllm.entrypoints.launchers.cli_args import make_arg_parser  # vLLM >= 0.3x
    except ImportError:
        from vllm.entrypoints.openai.cli_args import make_arg_parser  # vLLM 0.19 .. 0.26
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser())


def cli_parser():
    """`vllm serve`'s own parser (the `vllm` command's serve subcommand)."""
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    ServeSubcommand().subparser_init(parser.add_subparsers(dest="subcommand"))
    return parser


def cases():
    from scripts.settings import load
    from scripts.vllm_args import PROFILE_FLAGS

    for device in ("cuda", "cpu"):
        for profile in PROFILE_FLAGS:
            if device == "cpu" and profile == "fp8":
                continue
            # GPU_COUNT=4 with TP=2: two data-parallel replicas (--data-parallel-size 2)
            env = {"SERVE_DEVICE": device, "SERVE_PROFILE": profile, "TENSOR_PARALLEL_SIZE": "2",
                   "GPU_COUNT": "4", "API_KEY_FILE": "/run/secrets/api_key"}  # fmt: skip
            yield f"{device}/{profile}", load(env)


def disagreements(name: str, settings, ns) -> list[str]:
    """What vLLM parsed against what the settings and the preflight estimate assume."""
    from scripts import preflight

    out = []
    want = {
        "max_model_len": settings.max_model_len,
        "served_model_name": [settings.served_model_name],
        "tensor_parallel_size": 2,
        "data_parallel_size": settings.data_parallel_size,
    }
    for key, value in want.items():
        if getattr(ns, key) != value:
            out.append(f"{name}: vLLM parsed {key}={getattr(ns, key)!r}, expected {value!r}")
    if settings.device == "cuda":
        need = preflight.model_memory_need(settings, preflight.QWEN3_8B)
        parsed_fp8_w = ns.quantization == "fp8"
        parsed_fp8_kv = str(ns.kv_cache_dtype).startswith("fp8")
        if (need.fp8_weights, need.fp8_kv) != (parsed_fp8_w, parsed_fp8_kv):
            out.append(
                f"{name}: preflight assumes fp8 weights={need.fp8_weights}, fp8 KV="
                f"{need.fp8_kv}; vLLM parsed quantization={ns.quantization!r}, "
                f"kv_cache_dtype={ns.kv_cache_dtype!r}"
            )
    return out


def main() -> int:
    import vllm

    from scripts.vllm_args import build_args, command

    platform_for_parsing()
    failures: dict[str, str] = {}
    checked = 0
    for name, settings in cases():
        argv = build_args(settings)
        cli = command(settings, program=["vllm", "serve"])
        try:
            ns = server_parser().parse_args(argv)
            ns_cli = cli_parser().parse_args(cli[1:])
        except SystemExit as e:  # argparse reports on stderr and exits 2
            failures[name] = f"refused (exit {e.code}): {argv}"
            continue
        problems = disagreements(name, settings, ns) + disagreements(f"{name} (vllm serve)",
                                                                     settings, ns_cli)  # fmt: skip
        if ns_cli.model_tag != str(settings.model_path):
            problems.append(f"{name}: `vllm serve` took {ns_cli.model_tag!r} as the model")
        if problems:
            failures[name] = "; ".join(problems)
            continue
        checked += 1
    print(json.dumps({"vllm": vllm.__version__, "accepted": checked, "refused": failures}))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
