"""Runs workloads: checks outputs equal, times torchvision and pydet_ops interleaved, prints the table."""

import argparse
import datetime
import json
import os
import platform
import re
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


def parse_nvidia_driver(proc_version: str) -> str:
    """The driver version in the text of /proc/driver/nvidia/version ("" when absent). Its first line reads
    "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  <date>" (proprietary module) or
    "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build ..." (open module)."""
    match = re.search(r"Kernel Module.*?\s(\d+\.\d+(?:\.\d+)?)\s", proc_version)
    return match.group(1) if match else ""


def _nvidia_driver() -> str:
    """The NVIDIA kernel driver's version, e.g. "580.65.06" ("unknown" when it cannot be read)."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            version = parse_nvidia_driver(f.read())
        if version:
            return version
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        lines = out.stdout.strip().splitlines()
        if out.returncode == 0 and lines:
            return lines[0].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def cuda_environment() -> Dict[str, Any]:
    """The GPU the run uses (the current CUDA device) and the CUDA stack under it."""
    index = torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    return {
        "gpu": torch.cuda.get_device_name(index),
        "gpu_capability": f"sm_{props.major}{props.minor}",
        "gpu_memory": props.total_memory,
        "gpu_count": torch.cuda.device_count(),
        "cuda": torch.version.cuda or "unknown",
        "cuda_driver": _nvidia_driver(),
        "cudnn": torch.backends.cudnn.version(),
        "pydet_ops_cuda_build": bool(pydet_ops.build_info().get("cuda")),
    }


def cuda_problem() -> str:
    """Why `--device cuda` cannot run in this process ("" when it can)."""
    if not torch.cuda.is_available():
        if torch.version.cuda:
            detail = f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no usable GPU"
            detail += " (no device, no driver, or CUDA_VISIBLE_DEVICES hides it)"
        else:
            detail = f"torch {torch.__version__} is a CPU-only build"
        return f"--device cuda: torch.cuda.is_available() is False: {detail}"
    if not torch._C._dispatch_has_kernel_for_dispatch_key("pydet_ops::nms", "CUDA"):
        return (
            "--device cuda: this pydet_ops build has no CUDA kernels (none registered for pydet_ops::nms); "
            "rebuild the extension with CUDA (FORCE_CUDA=1, see README 'Building')"
        )
    return ""


def device_slug(name: str) -> str:
    """A directory name for a device: "NVIDIA H100 80GB HBM3" -> "nvidia-h100-80gb-hbm3"."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "gpu"


def environment(threads: int, device: str) -> Dict[str, Any]:
    env = {
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
    if device == "cuda":
        env.update(cuda_environment())
    return env


def header(env: Dict[str, Any]) -> str:
    if env["device"] == "cuda":
        return (
            f"pydet_ops {env['pydet_ops']} vs torchvision {env['torchvision']} | torch {env['torch']} | "
            f"{env['gpu']} ({env['gpu_capability']}) | CUDA {env['cuda']}, driver {env['cuda_driver']} | "
            f"host {env['cpu']}, {env['threads']} threads"
        )
    return (
        f"pydet_ops {env['pydet_ops']} vs torchvision {env['torchvision']} | torch {env['torch']} | "
        f"{env['cpu']} | ISA {env['cpu_capability']} | {env['threads']} threads"
    )


def run_workload(workload: Workload, repeats: int, batch_s: float, measure_memory: bool) -> Dict[str, Any]:
    inputs = inputs_for(workload)
    expected = workload.torchvision_fn(*inputs)
    actual = workload.pydet_fn(*inputs)
    mismatch = workload.check(inputs, expected, actual)
    del expected, actual
    memory = {"torchvision": -1, "pydet_ops": -1}
    if measure_memory:
        # Before timing: measuring trims the heap, and the timing's warm-up then grows it back.
        extra = timing.extra_cuda_bytes if workload.device == "cuda" else timing.extra_resident_bytes
        memory = {
            "torchvision": extra(lambda: workload.torchvision_fn(*inputs)),
            "pydet_ops": extra(lambda: workload.pydet_fn(*inputs)),
        }
    tv, ours = timing.compare(
        lambda: workload.torchvision_fn(*inputs),
        lambda: workload.pydet_fn(*inputs),
        repeats,
        batch_s,
        device=workload.device,
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


def results_dir(env: Dict[str, Any]) -> str:
    """results/cpu for CPU runs; results/<GPU name slug> for CUDA runs, one folder per GPU model."""
    if env["device"] == "cuda":
        return os.path.join(RESULTS_DIR, device_slug(env["gpu"]))
    return os.path.join(RESULTS_DIR, env["device"])


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Times every pydet_ops op against torchvision.ops on the same inputs, in one process.",
    )
    parser.add_argument("--ops", default="", help="comma-separated op names (or case substrings) to run")
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["cpu", "cuda"],
        help="device to run on; cuda needs a GPU and pydet_ops built with CUDA kernels",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="a few seconds per op, no heavy sweep points (CI)")
    parser.add_argument("--repeat", type=int, default=None, help="timed repeats per side (default 7, quick 3)")
    parser.add_argument(
        "--json", default=None, help="write results here; 'auto' = results/<cpu or GPU name>/<date>.json"
    )
    parser.add_argument(
        "--plot", default=None, help="write PNG plots into this folder; 'auto' = results/<cpu or GPU name>/"
    )
    parser.add_argument("--compare", default=None, metavar="PREVIOUS.json", help="flag speedup regressions")
    parser.add_argument("--no-memory", action="store_true", help="skip the extra-memory measurement")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)

    # The workload list needs no GPU (inputs are built only when a workload runs): --list works anywhere.
    workloads = select(args.ops, quick=args.quick, device=args.device)
    if args.list:
        for w in workloads:
            skipped = f"  (skipped on {w.device}: {w.skip})" if w.skip else ""
            print(f"{w.name:45s} {w.shape}{skipped}")
        return 0
    if args.device == "cuda":
        problem = cuda_problem()
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    if not workloads:
        print(f"no workload matches --ops {args.ops!r}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    repeats = args.repeat or (3 if args.quick else 7)
    batch_s = 0.02 if args.quick else 0.1
    env = environment(torch.get_num_threads(), args.device)
    print(header(env), flush=True)
    skipped = [w for w in workloads if w.skip]
    for w in skipped:
        print(f"skipped {w.name}: {w.skip}", file=sys.stderr, flush=True)
    workloads = [w for w in workloads if not w.skip]
    interactive = sys.stderr.isatty()
    rows, failed = [], []
    for k, workload in enumerate(workloads):
        line = report.progress_line(k, len(workloads), workload.name)
        print(("\r" + line.ljust(100)) if interactive else line, end="" if interactive else "\n", file=sys.stderr, flush=True)
        try:
            rows.append(run_workload(workload, repeats, batch_s, measure_memory=not args.no_memory))
        except Exception as e:  # noqa: BLE001
            if args.device == "cpu":
                raise
            # On a GPU one failing case (a missing kernel, out of memory) should not cost the rest of a long
            # run: it is reported here and in the JSON, and the exit status says the run failed.
            message = f"{type(e).__name__}: {e}"
            failed.append({"workload": workload.name, "error": message})
            first_line = message.splitlines()[0] if message else type(e).__name__
            print(f"\n{workload.name} FAILED: {first_line}", file=sys.stderr, flush=True)
            torch.cuda.empty_cache()
    done = report.progress_line(len(workloads), len(workloads), "done")
    print(("\r" + done.ljust(100)) if interactive else done, file=sys.stderr, flush=True)
    print(report.format_table(rows))
    notes = report.format_profiles(rows)
    if notes:
        print(notes)
    graphs = report.format_graph_replays(rows)
    if graphs:
        print(graphs)

    if args.json:
        stamp = datetime.datetime.now().strftime("%Y-%m-%d")
        path = os.path.join(results_dir(env), f"{stamp}.json") if args.json == "auto" else args.json
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        payload: Dict[str, Any] = {"environment": env, "results": rows}
        if args.device != "cpu":
            payload["skipped"] = [{"workload": w.name, "reason": w.skip} for w in skipped]
            payload["failed"] = failed
        with open(path, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        print(f"results written to {path}")
    if args.plot:
        directory = results_dir(env) if args.plot == "auto" else args.plot
        for path in report.plot(rows, env, directory):
            print(f"plot written to {path}")
    if args.compare:
        print(report.compare(rows, args.compare))
    status = 0
    mismatches = [r for r in rows if not r["match"]]
    if mismatches:
        print(f"{len(mismatches)} workload(s) disagree with torchvision", file=sys.stderr)
        status = 1
    if failed:
        names = ", ".join(f["workload"] for f in failed)
        print(f"{len(failed)} workload(s) failed on {args.device}: {names}", file=sys.stderr)
        status = 1
    return status
