"""Presentation of benchmark results: the terminal table, comparison with an earlier run, and plots."""

import json
import os
from collections import defaultdict
from typing import Any, Dict, List


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def fmt_bytes(n: int) -> str:
    if n < 0:
        return "n/a"
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.0f} MiB"
    return f"{n / (1 << 10):.0f} KiB"


def _markdown(header: List[str], lines: List[List[str]]) -> str:
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out.extend("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in lines)
    return "\n".join(out)


def format_table(rows: List[Dict[str, Any]]) -> str:
    header = ["op", "case", "shape", "torchvision", "pydet_ops", "speedup", "extra memory tv / ours", "match"]
    lines = [
        [
            r["op"],
            r["case"],
            r["shape"],
            fmt_time(r["torchvision"]["median"]),
            fmt_time(r["pydet_ops"]["median"]),
            fmt_speedup(r["speedup"]),
            f"{fmt_bytes(r['memory']['torchvision'])} / {fmt_bytes(r['memory']['pydet_ops'])}",
            "yes" if r["match"] else "NO: " + r["mismatch"],
        ]
        for r in rows
    ]
    return _markdown(header, lines)


def fmt_speedup(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 2 else f"{ratio:.1f}x"


def format_profiles(rows: List[Dict[str, Any]]) -> str:
    """For whole-detector rows: the share of one profiled inference spent in the detection steps."""
    lines = []
    for r in rows:
        prof = r.get("profile")
        if not prof:
            continue
        lines.append(f"{r['op']} ({r['case']}): time in detection steps, one profiled inference")
        for side in ("torchvision", "pydet_ops"):
            p = prof[side]
            steps = ", ".join(f"{k} {fmt_time(v)}" for k, v in sorted(p["steps"].items(), key=lambda kv: -kv[1]))
            lines.append(
                f"  {side:11s} {fmt_time(p['detection_s'])} of {fmt_time(p['total_s'])} "
                f"({100 * p['share']:.1f} %): {steps}"
            )
    return "\n".join(lines)


GRAPH_SUFFIX = ", CUDA graph replay"
EAGER_SUFFIX = ", eager"


def format_graph_replays(rows: List[Dict[str, Any]]) -> str:
    """For ops timed both eagerly and replayed from a CUDA graph (cases "<x>, eager" and "<x>, CUDA graph
    replay"): the two pydet_ops times side by side. Both rows are checked against torchvision, and the replay
    against the eager call, before timing."""
    by_case = {(r["op"], r["case"]): r for r in rows}
    lines = []
    for r in rows:
        if not r["case"].endswith(GRAPH_SUFFIX):
            continue
        base = r["case"][: -len(GRAPH_SUFFIX)]
        eager = by_case.get((r["op"], base + EAGER_SUFFIX))
        if eager is None:
            continue
        e, g = eager["pydet_ops"]["median"], r["pydet_ops"]["median"]
        lines.append(
            f"{r['op']} ({base}): eager {fmt_time(e)}, CUDA graph replay {fmt_time(g)} ({fmt_speedup(e / g)}), "
            f"replay equal to the eager call and to torchvision: {'yes' if r['match'] else 'NO: ' + r['mismatch']}"
        )
    return "\n".join(lines)


def _relative_spread(stats: Dict[str, float]) -> float:
    return stats["iqr"] / stats["median"] if stats["median"] > 0 else 0.0


def compare(rows: List[Dict[str, Any]], previous_path: str, tolerance: float = 0.10) -> str:
    """Table of speedup changes against an earlier results file; ratio drops beyond noise are flagged.

    A drop counts as a regression when the new speedup is below the old one by more than the larger of
    `tolerance` and the combined relative spread (IQR / median) of the four timings involved.
    """
    with open(previous_path) as f:
        previous = {(r["op"], r["case"]): r for r in json.load(f)["results"]}
    lines, regressions = [], 0
    for r in rows:
        old = previous.get((r["op"], r["case"]))
        if old is None:
            continue
        noise = sum(_relative_spread(x[side]) for x in (r, old) for side in ("torchvision", "pydet_ops"))
        allowed = max(tolerance, noise)
        change = r["speedup"] / old["speedup"] - 1.0
        flag = "REGRESSION" if change < -allowed else ("faster" if change > allowed else "same within noise")
        regressions += flag == "REGRESSION"
        lines.append(
            [r["op"], r["case"], f"{old['speedup']:.1f}x", f"{r['speedup']:.1f}x", f"{change:+.0%}", f"{allowed:.0%}", flag]
        )
    header = ["op", "case", "before", "now", "change", "noise", "verdict"]
    summary = f"{regressions} regression(s) beyond noise against {previous_path}"
    return _markdown(header, lines) + "\n" + summary


def plot(rows: List[Dict[str, Any]], env: Dict[str, Any], directory: str) -> List[str]:
    """Speedup bar chart (one bar per case, grouped by op) and log-log time-vs-size curves of the sweeps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    written = []
    if env.get("device") == "cuda":
        title = f"{env['gpu']}, CUDA {env['cuda']}, torch {env['torch']}"
    else:
        title = f"{env['cpu']} ({env['cpu_capability']}), {env['threads']} threads, torch {env['torch']}"

    cases = [r for r in rows if not r.get("sweep")]
    if cases:
        fig, ax = plt.subplots(figsize=(10, 0.32 * len(cases) + 1.5))
        labels = [f"{r['op']} [{r['case']}]" for r in cases][::-1]
        values = [r["speedup"] for r in cases][::-1]
        colors = ["tab:green" if r["match"] else "tab:red" for r in cases][::-1]
        ax.barh(range(len(cases)), values, color=colors)
        ax.set_yticks(range(len(cases)), labels, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(min(0.5, min(values) / 1.5), max(values) * 2.5)  # room for the labels
        ax.axvline(1.0, color="black", linewidth=0.8)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.1f}x", va="center", fontsize=7)
        ax.set_xlabel("speedup over torchvision (log scale; 1x = same speed)")
        ax.set_title(f"pydet_ops vs torchvision\n{title}", fontsize=9)
        fig.tight_layout()
        path = os.path.join(directory, "speedup.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    sweeps = defaultdict(list)
    for r in rows:
        if r.get("sweep"):
            sweeps[r["sweep"]].append(r)
    if sweeps:
        fig, axes = plt.subplots(1, len(sweeps), figsize=(5 * len(sweeps), 4.2), squeeze=False)
        for ax, (name, points) in zip(axes[0], sorted(sweeps.items())):
            points.sort(key=lambda r: r["size"])
            sizes = [r["size"] for r in points]
            for side, style in (("torchvision", "o-"), ("pydet_ops", "s-")):
                ax.loglog(sizes, [r[side]["median"] for r in points], style, label=side)
            ax.set_xlabel(name)
            ax.set_ylabel("time per call (s)")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
            ax.set_title(name, fontsize=9)
        fig.suptitle(f"Scaling, {title}", fontsize=9)
        fig.tight_layout()
        path = os.path.join(directory, "scaling.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def progress_line(done: int, total: int, label: str, width: int = 28) -> str:
    filled = int(round(width * done / max(total, 1)))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label}"


__all__ = ["format_table", "format_graph_replays", "compare", "plot", "progress_line", "fmt_time", "fmt_bytes"]
