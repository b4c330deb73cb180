"""Parse the argument lists that scripts/stack/vllm_args.py builds with the installed vLLM's own
parsers, for every profile and device: the module entry point's (`--model`) and `vllm serve
MODEL`'s (the form every GPU start uses, the model moved to the front). For every GPU profile,
vLLM's own ModelConfig is then built from those arguments on the stand-in of the checkpoint the
profile serves (bench/standins.py: bf16, Qwen's FP8 and AWQ configs), so vLLM reads the
checkpoint's quantization_config and resolves its method. Checks that the preflight memory estimate
assumes the weight format, group / block size and KV cache type vLLM resolved. Exits non-zero,
naming the profile and the problem, if any list is refused or disagrees. Runs without a GPU (a GPU
build is told it is on the CPU platform: parsing and config only, no kernels; on the CPU platform
vLLM names the CPU's AWQ method, on CUDA it picks Marlin, see scripts/stack/vllm_args.py).

    python -m tests.check_vllm_args
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

# vLLM's names for an AWQ checkpoint: the method it resolves depends on the platform and version
AWQ_METHODS = {"awq", "awq_marlin", "auto_awq", "cpu_awq"}


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


def standin_models() -> Path:
    """A models volume with each profile's checkpoint under its repo name: the default MODEL_ID's
    bf16, FP8 and AWQ stand-ins (their configs: bench/standins.build_shape), where
    settings.load() finds them by itself."""
    from bench.standins import build_shape
    from scripts.stack.profiles import PROFILES, checkpoint_id

    root = Path(tempfile.mkdtemp(prefix="qvs-models-"))
    for name in PROFILES:
        repo = root / checkpoint_id("Qwen/Qwen3-8B", name)
        if not repo.exists():
            repo.mkdir(parents=True)
            build_shape(repo, name, tokenizer=False)
    return root


def cases(models_dir: str = "/models"):
    from scripts.stack.profiles import BF16, PROFILES
    from scripts.stack.settings import load

    for device in ("cuda", "cpu"):
        for profile, spec in PROFILES.items():
            if device == "cpu" and spec.weights != BF16:
                continue
            # GPU_COUNT=4 with TP=2: two data-parallel replicas (--data-parallel-size 2)
            env = {"SERVE_DEVICE": device, "SERVE_PROFILE": profile, "TENSOR_PARALLEL_SIZE": "2",
                   "GPU_COUNT": "4", "API_KEY_FILE": "/run/secrets/api_key",
                   "MODELS_DIR": models_dir}  # fmt: skip
            yield f"{device}/{profile}", load(env)


def resolved_format(method: str | None) -> str:
    """vLLM's resolved quantization method as one of vllm_args' weight formats."""
    from scripts.stack.profiles import AWQ, BF16

    return BF16 if method is None else AWQ if method in AWQ_METHODS else str(method)


def disagreements(name: str, settings, ns, model_config=None) -> list[str]:
    """What vLLM parsed (and, given its ModelConfig, resolved from the checkpoint) against what
    the settings and the preflight estimate assume."""
    from scripts.checks import memory
    from scripts.stack import model, profiles

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
        need = memory.model_memory_need(settings, model.QWEN3_8B)
        parsed_fp8_kv = str(ns.kv_cache_dtype).startswith("fp8")
        if need.fp8_kv != parsed_fp8_kv:
            out.append(f"{name}: preflight assumes fp8 KV={need.fp8_kv}; vLLM parsed "
                       f"kv_cache_dtype={ns.kv_cache_dtype!r}")  # fmt: skip
        if model_config is not None:
            method = model_config.quantization
            if resolved_format(method) != need.weight_format:
                out.append(f"{name}: preflight assumes {need.weight_format} weights; vLLM "
                           f"resolved {method!r} from {settings.model_path}")  # fmt: skip
            # the group / block size vLLM read from the checkpoint gives the estimate's bytes
            quant = getattr(model_config.hf_config, "quantization_config", None)
            if need.weight_format != "bf16" and quant is not None:
                shape, fmt = model.QWEN3_8B, need.weight_format
                if shape.weight_bytes(fmt, quant=quant) != shape.weight_bytes(fmt):
                    out.append(f"{name}: vLLM read quantization_config {quant}, the preflight "
                               f"estimate assumes {profiles.quant_config(fmt)}")  # fmt: skip
    return out


def model_config(argv: list[str]):
    """vLLM's own ModelConfig for these server arguments: it reads the checkpoint's config.json
    and resolves the quantization method (refusing a --quantization that does not match)."""
    from vllm.engine.arg_utils import EngineArgs

    return EngineArgs.from_cli_args(server_parser().parse_args(argv)).create_model_config()


def main() -> int:
    import vllm

    platform_for_parsing()
    failures: dict[str, str] = {}
    resolved: dict[str, str | None] = {}
    models = standin_models()
    try:
        checked = check_all(models, failures, resolved)
    finally:
        shutil.rmtree(models)  # symlinks to the cached stand-ins
    report = {"vllm": vllm.__version__, "accepted": checked, "refused": failures,
              "quantization": resolved}  # fmt: skip
    print(json.dumps(report))
    return 1 if failures else 0


def check_all(models: Path, failures: dict, resolved: dict) -> int:
    from scripts.stack.vllm_args import build_args, command

    checked = 0
    for name, settings in cases(str(models)):
        argv = build_args(settings)
        cli = command(settings, program=["vllm", "serve"])
        try:
            ns = server_parser().parse_args(argv)
            ns_cli = cli_parser().parse_args(cli[1:])
        except SystemExit as e:  # argparse reports on stderr and exits 2
            failures[name] = f"refused (exit {e.code}): {argv}"
            continue
        mc = None
        if settings.device == "cuda":
            try:
                mc = model_config(argv)
            except Exception as e:  # vLLM's config validation: one line of it
                failures[name] = f"ModelConfig refused it: {' '.join(str(e).split())[:400]}"
                continue
            resolved[name] = mc.quantization
        problems = disagreements(name, settings, ns, mc) + disagreements(
            f"{name} (vllm serve)", settings, ns_cli)  # fmt: skip
        if ns_cli.model_tag != str(settings.model_path):
            problems.append(f"{name}: `vllm serve` took {ns_cli.model_tag!r} as the model")
        if problems:
            failures[name] = "; ".join(problems)
            continue
        checked += 1
    return checked


if __name__ == "__main__":
    sys.exit(main())
