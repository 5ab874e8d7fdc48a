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

from . import report, timing
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


def run_workload(workload: Workload, repeats: int, batch_s: float, measure_memory: bool) -> Dict[str, Any]:
    inputs = inputs_for(workload)
    expected = workload.torchvision_fn(*inputs)
    actual = workload.pydet_fn(*inputs)
    mismatch = workload.check(inputs, expected, actual)
    del expected, actual
    memory = {"torchvision": -1, "pydet_ops": -1}
    if measure_memory:
        # Before timing: measuring trims the heap, and the timing's warm-up then grows it back.
        memory = {
            "torchvision": timing.extra_resident_bytes(lambda: workload.torchvision_fn(*inputs)),
            "pydet_ops": timing.extra_resident_bytes(lambda: workload.pydet_fn(*inputs)),
        }
    tv, ours = timing.compare(
        lambda: workload.torchvision_fn(*inputs), lambda: workload.pydet_fn(*inputs), repeats, batch_s
    )
    profile = workload.profile(*inputs) if workload.profile is not None else None
    return {
        "op": workload.op,
        "case": workload.case,
        "shape": workload.shape,
        "sweep": workload.sweep,
        "size": workload.size,
        "torchvision": tv,
        "pydet_ops": ours,
        "speedup": tv["median"] / ours["median"],
        "memory": memory,
        "match": not mismatch,
        "mismatch": mismatch,
        "profile": profile,
    }


def _results_dir(device: str) -> str:
    return os.path.join(RESULTS_DIR, device)


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Times every pydet_ops op against torchvision.ops on the same inputs, in one process.",
    )
    parser.add_argument("--ops", default="", help="comma-separated op names (or case substrings) to run")
    parser.add_argument("--device", default="cpu", choices=["cpu"], help="device to run on (CUDA: not built yet)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="a few seconds per op, no heavy sweep points (CI)")
    parser.add_argument("--repeat", type=int, default=None, help="timed repeats per side (default 7, quick 3)")
    parser.add_argument("--json", default=None, help="write results here; 'auto' = results/<device>/<date>.json")
    parser.add_argument("--plot", default=None, help="write PNG plots into this folder; 'auto' = results/<device>/")
    parser.add_argument("--compare", default=None, metavar="PREVIOUS.json", help="flag speedup regressions")
    parser.add_argument("--no-memory", action="store_true", help="skip the extra-memory measurement")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)

    workloads = select(args.ops, quick=args.quick)
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
    interactive = sys.stderr.isatty()
    rows = []
    for k, workload in enumerate(workloads):
        line = report.progress_line(k, len(workloads), workload.name)
        print(("\r" + line.ljust(100)) if interactive else line, end="" if interactive else "\n", file=sys.stderr, flush=True)
        rows.append(run_workload(workload, repeats, batch_s, measure_memory=not args.no_memory))
    done = report.progress_line(len(workloads), len(workloads), "done")
    print(("\r" + done.ljust(100)) if interactive else done, file=sys.stderr, flush=True)
    print(report.format_table(rows))
    notes = report.format_profiles(rows)
    if notes:
        print(notes)

    if args.json:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d")
        path = os.path.join(_results_dir(args.device), f"{stamp}.json") if args.json == "auto" else args.json
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w") as f:
            json.dump({"environment": env, "results": rows}, f, indent=2)
            f.write("\n")
        print(f"results written to {path}")
    if args.plot:
        directory = _results_dir(args.device) if args.plot == "auto" else args.plot
        for path in report.plot(rows, env, directory):
            print(f"plot written to {path}")
    if args.compare:
        print(report.compare(rows, args.compare))
    mismatches = [r for r in rows if not r["match"]]
    if mismatches:
        print(f"{len(mismatches)} workload(s) disagree with torchvision", file=sys.stderr)
        return 1
    return 0
