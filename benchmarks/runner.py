"""Runs workloads: checks outputs equal, times torchvision and pydet_ops interleaved, prints the table."""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from typing import Any, Dict, List

import torch
import torchvision

import pydet_ops

from . import timing
from .workloads import Workload, inputs_for, select

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def environment(threads: int, device: str) -> Dict[str, Any]:
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": device,
        "cpu": _cpu_model(),
        "cpu_capability": pydet_ops.cpu_capability(),
        "cores": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "pydet_ops": pydet_ops.__version__,
        "commit": _git_commit(),
    }


def run_workload(workload: Workload, repeats: int, batch_s: float) -> Dict[str, Any]:
    inputs = inputs_for(workload)
    expected = workload.torchvision_fn(*inputs)
    actual = workload.pydet_fn(*inputs)
    mismatch = workload.check(inputs, expected, actual)
    tv, ours = timing.compare(
        lambda: workload.torchvision_fn(*inputs), lambda: workload.pydet_fn(*inputs), repeats, batch_s
    )
    return {
        "op": workload.op,
        "case": workload.case,
        "shape": workload.shape,
        "torchvision": tv,
        "pydet_ops": ours,
        "speedup": tv["median"] / ours["median"],
        "match": not mismatch,
        "mismatch": mismatch,
    }


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def format_table(rows: List[Dict[str, Any]]) -> str:
    header = ["op", "case", "shape", "torchvision", "pydet_ops", "speedup", "match"]
    lines = [
        [
            r["op"],
            r["case"],
            r["shape"],
            _fmt_time(r["torchvision"]["median"]),
            _fmt_time(r["pydet_ops"]["median"]),
            f"{r['speedup']:.1f}x",
            "yes" if r["match"] else "NO: " + r["mismatch"],
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |")
    return "\n".join(out)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--ops", default="", help="comma-separated op names (or case substrings) to run")
    parser.add_argument("--device", default="cpu", choices=["cpu"], help="device to run on")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="a few seconds per op: checks and rough ratios")
    parser.add_argument("--repeat", type=int, default=None, help="timed repeats per side (default 7, quick 3)")
    parser.add_argument("--json", default=None, help="write results here; 'auto' = results/<device>/<date>.json")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)

    workloads = select(args.ops)
    if args.list:
        for w in workloads:
            print(f"{w.name:45s} {w.shape}")
        return 0
    if not workloads:
        print(f"no workload matches --ops {args.ops!r}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    repeats = args.repeat or (3 if args.quick else 7)
    batch_s = 0.02 if args.quick else 0.1
    env = environment(torch.get_num_threads(), args.device)
    print(
        f"pydet_ops {env['pydet_ops']} vs torchvision {env['torchvision']} | torch {env['torch']} | "
        f"{env['cpu']} | ISA {env['cpu_capability']} | {env['threads']} threads",
        flush=True,
    )
    rows = []
    for k, workload in enumerate(workloads, 1):
        print(f"[{k}/{len(workloads)}] {workload.name} ...", file=sys.stderr, flush=True)
        rows.append(run_workload(workload, repeats, batch_s))
    print(format_table(rows))
    if args.json:
        path = args.json
        if path == "auto":
            stamp = datetime.datetime.now().strftime("%Y-%m-%d")
            path = os.path.join(RESULTS_DIR, args.device, f"{stamp}.json")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"environment": env, "results": rows}, f, indent=2)
            f.write("\n")
        print(f"results written to {path}")
    mismatches = [r for r in rows if not r["match"]]
    if mismatches:
        print(f"{len(mismatches)} workload(s) disagree with torchvision", file=sys.stderr)
        return 1
    return 0
