"""Turn a folder of bench.run results into plots and a Markdown report with the goals checked.

    python -m bench.report bench/results/2026-11-24-h100 [--baseline baseline]

Writes throughput.png, tpot.png and REPORT.md into the folder. Goals, each against the plain
bf16 baseline measured in the same session on the same card: default >= 1.15x output tok/s at
C=64 with p99 TPOT no worse; fp8 (Qwen's FP8 checkpoint) >= 1.3x at C=64; awq (its 4-bit AWQ
checkpoint) >= 2.0x single-stream; single-stream bf16 TPOT within 1.25x of the bandwidth floor;
warm time to ready <= 0.3x cold. A missed goal is reported with its shortfall.

Only runs that can be compared are: it stops when the folder mixes cards (nvidia-smi's name),
vLLM or torch versions, or holds two runs of one label (--allow-mixed writes the report anyway,
with a warning at its top). Every run's card, versions, flags and the checkpoint it served are
listed in the report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

WEIGHTS_GB = 16.4  # Qwen3-8B bf16 weights
HBM_TBPS = 3.35  # H100 SXM HBM3


class Incomparable(ValueError):
    """Runs that must not be compared in one report; str() names them."""


def load(folder: Path) -> dict[str, dict]:
    runs: dict[str, dict] = {}
    files: dict[str, str] = {}
    for path in sorted(folder.glob("*.json")):
        record = json.loads(path.read_text())
        if isinstance(record, dict) and record.get("results"):  # bench.run records only
            label = record["label"]
            if label in runs:
                raise Incomparable(
                    f"two runs labelled {label!r} ({files[label]}, {path.name}): a report "
                    "compares one (first) run per configuration"
                )
            runs[label], files[label] = record, path.name
    return runs


def setup(run: dict) -> tuple[str, str, str]:
    """(card, vLLM, torch) of a run; records from before these were kept say "unrecorded"."""
    gpu = run.get("card")
    name = gpu.get("name", "?") if isinstance(gpu, dict) else "no GPU" if "card" in run else None
    return name or "unrecorded", run.get("vllm") or "unrecorded", run.get("torch") or "unrecorded"


def mixed(runs: dict[str, dict]) -> str:
    """Why these runs are not comparable ("" when they are): different cards or versions."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for label, run in runs.items():
        groups.setdefault(setup(run), []).append(label)
    if len(groups) < 2:
        return ""
    parts = [f"{', '.join(labels)} on {card} with vLLM {v}, torch {tv}"
             for (card, v, tv), labels in groups.items()]  # fmt: skip
    return "runs from different cards or versions: " + "; ".join(parts)


def metric(run: dict, c: int, key: str) -> float | None:
    r = run["results"].get(str(c))
    return None if r is None else r.get(key)


def goals(runs: dict[str, dict], base: str) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) rows; met is None where a run is missing."""
    out: list[tuple[str, str, bool | None]] = []
    b = runs.get(base)
    d = runs.get("default")
    if b and d:
        ratio = metric(d, 64, "output_throughput") / metric(b, 64, "output_throughput")
        p99d, p99b = metric(d, 64, "p99_tpot_ms"), metric(b, 64, "p99_tpot_ms")
        out.append(("default >= 1.15x baseline tok/s at C=64", f"{ratio:.3f}x", ratio >= 1.15))
        out.append(
            ("default p99 TPOT at C=64 no worse", f"{p99d:.2f} vs {p99b:.2f} ms", p99d <= p99b)
        )
    for label, c, want, what in (("fp8", 64, 1.3, "tok/s at C=64"),
                                 ("awq", 1, 2.0, "single-stream tok/s")):  # fmt: skip
        q = runs.get(label)
        if b and q and metric(q, c, "output_throughput") and metric(b, c, "output_throughput"):
            ratio = metric(q, c, "output_throughput") / metric(b, c, "output_throughput")
            goal = f"{label} >= {want}x bf16 baseline {what}"
            out.append((goal, f"{ratio:.3f}x", ratio >= want))
    if b:
        floor = WEIGHTS_GB / HBM_TBPS  # GB / (TB/s) = ms
        tpot = min(
            metric(r, 1, "median_tpot_ms")
            for k, r in runs.items()
            if k in (base, "default", "latency", "plain") and metric(r, 1, "median_tpot_ms")
        )
        out.append(
            (
                f"bf16 single-stream TPOT <= 1.25x floor ({floor:.2f} ms)",
                f"{tpot:.2f} ms = {tpot / floor:.2f}x",
                tpot <= 1.25 * floor,
            )
        )
    out += scale_goals(runs, base)
    for name, r in runs.items():
        if r.get("warm_ready_s") and r.get("ready_s"):
            ratio = r["warm_ready_s"] / r["ready_s"]
            out.append(
                (
                    f"{name}: warm ready <= 0.3x cold",
                    f"{r['warm_ready_s']:.0f}s / {r['ready_s']:.0f}s = {ratio:.2f}x",
                    ratio <= 0.3,
                )
            )
    return out


def scale_goals(runs: dict[str, dict], base: str) -> list[tuple[str, str, bool | None]]:
    """Goals of the scale-out session (bench.scale_out; issue "Scale out"): `base` is one GPU
    (tp1); dpN / routerN / tpN use N GPUs; router1 is the router over one replica."""

    def ratio(a: str, b: str, c: int, key: str = "output_throughput") -> float | None:
        x, y = runs.get(a), runs.get(b)
        if not (x and y and metric(x, c, key) and metric(y, c, key)):
            return None
        return metric(x, c, key) / metric(y, c, key)

    out: list[tuple[str, str, bool | None]] = []
    for name, goal, a, b, c, key, want in (
        ("data parallel 2 vs 1 GPU, tok/s at C=128", ">= 1.9x", "dp2", base, 128, None, 1.9),
        ("data parallel 2 (C=128) vs 1 GPU at the same load per GPU (C=64)", "", "dp2", base,
         (128, 64), None, None),
        ("router over 2 replicas vs 1, tok/s at C=128", ">= 1.9x", "router2", "router1", 128,
         None, 1.9),
        ("tensor parallel 2: TPOT p50 at C=1 vs 1 GPU", "<= 0.65x", "tp2", base, 1,
         "median_tpot_ms", -0.65),
    ):  # fmt: skip
        if isinstance(c, tuple):
            x, y = runs.get(a), runs.get(b)
            if (
                x
                and y
                and metric(x, c[0], "output_throughput")
                and metric(y, c[1], "output_throughput")
            ):
                r = metric(x, c[0], "output_throughput") / metric(y, c[1], "output_throughput")
                out.append((name, f"{r:.2f}x (no goal: the capacity view)", True))
            continue
        r = ratio(a, b, c, key or "output_throughput")
        if r is None:
            if a in runs or b in runs:
                out.append((f"{name} {goal}", f"not measured ({a} or {b} missing)", None))
            continue
        met = r <= -want if want < 0 else r >= want
        out.append((f"{name} {goal}", f"{r:.3f}x", met))
    return out


def plot(runs: dict[str, dict], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for key, ylabel, name in (
        ("output_throughput", "output tokens/s", "throughput.png"),
        ("median_tpot_ms", "TPOT p50 (ms); dashed: p99", "tpot.png"),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, r in runs.items():
            cs = sorted(int(c) for c in r["results"])
            line = ax.plot(cs, [metric(r, c, key) for c in cs], marker="o", label=label)[0]
            if key == "median_tpot_ms":
                ax.plot(
                    cs, [metric(r, c, "p99_tpot_ms") for c in cs], ls="--", color=line.get_color()
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent requests (1000 in / 500 out)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"Qwen3-8B shape, vLLM {next(iter(runs.values()))['vllm']}")
        fig.tight_layout()
        fig.savefig(folder / name, dpi=110)
        plt.close(fig)
        written.append(name)
    return written


def markdown(runs: dict[str, dict], rows, images: list[str], warning: str = "") -> str:
    cs = sorted({int(c) for r in runs.values() for c in r["results"]})
    lines = [f"> **WARNING: not comparable.** {warning}", ""] if warning else []
    lines += [
        "# Benchmark report",
        "",
        "Random data, 1000 tokens in / 500 out, EOS ignored (`vllm bench serve`), fresh prompts "
        "every run.",
        "",
        "## Runs",
        "",
        "| run | card | vLLM | torch | checkpoint | requests before | flags |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, r in runs.items():
        card, v, tv = setup(r)
        server = r.get("server") or {}
        before = server.get("requests_before")
        flags = (r.get("meta") or {}).get("flags", "")
        lines.append(f"| {label} | {card} | {v} | {tv} | {server.get('root') or ''} | "
                     f"{'' if before is None else before} | `{flags}` |")  # fmt: skip
    lines += [
        "",
        "## Output tokens/s",
        "",
        "| profile | ready (cold) | warm ready | " + " | ".join(f"C={c}" for c in cs) + " |",
        "|---|---|---|" + "---|" * len(cs),
    ]
    for label, r in runs.items():
        cells = [
            f"{metric(r, c, 'output_throughput'):.0f}" if metric(r, c, "output_throughput") else ""
            for c in cs
        ]
        ready = f"{r['ready_s']:.0f}s" if r.get("ready_s") else ""
        warm = f"{r['warm_ready_s']:.0f}s" if r.get("warm_ready_s") else ""
        lines.append(f"| {label} | {ready} | {warm} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## TPOT p50 / p99 (ms)",
        "",
        "| profile | " + " | ".join(f"C={c}" for c in cs) + " |",
        "|---|" + "---|" * len(cs),
    ]
    for label, r in runs.items():
        cells = [
            f"{metric(r, c, 'median_tpot_ms'):.2f} / {metric(r, c, 'p99_tpot_ms'):.2f}"
            if metric(r, c, "median_tpot_ms")
            else ""
            for c in cs
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    for goal, measured, met in rows:
        verdict = "not run" if met is None else "yes" if met else "NO"
        lines.append(f"| {goal} | {measured} | {verdict} |")
    lines += [""] + [f"![{i}]({i})" for i in images] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--baseline", default="baseline")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument(
        "--allow-mixed", action="store_true", help="write a report of mixed runs, marked at its top"
    )
    a = ap.parse_args(argv)
    try:
        runs = load(a.folder)
    except Incomparable as e:
        print(f"bench.report: {e}", file=sys.stderr)
        return 2
    warning = mixed(runs)
    if warning and not a.allow_mixed:
        print(f"bench.report: {warning}; measure them in one session on one card, or pass "
              "--allow-mixed to write a marked report", file=sys.stderr)  # fmt: skip
        return 2
    if a.baseline not in runs:
        ap.error(f"no run labelled {a.baseline!r} in {a.folder}")
    rows = goals(runs, a.baseline)
    images = [] if a.no_plots else plot(runs, a.folder)
    intro = a.folder / "NOTES.md"
    text = markdown(runs, rows, images, warning)
    if warning:
        print(f"bench.report: WARNING: {warning}", file=sys.stderr)
    if intro.exists():
        text = intro.read_text().rstrip() + "\n\n" + text
    (a.folder / "REPORT.md").write_text(text)
    for goal, measured, met in rows:
        print(f"{'----' if met is None else 'met ' if met else 'MISS'}  {goal}: {measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
