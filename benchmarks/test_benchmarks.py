"""pytest-benchmark view of the workloads: ``pytest benchmarks/ --benchmark-only``.

Each workload is one benchmark group holding a torchvision and a pydet_ops case, so the comparison table shows
the two side by side. Outputs are checked equal before timing.
"""

import os
import types

import pytest
import torch
from torchvision.models.detection.image_list import ImageList

import pydet_ops

from . import report, runner, timing
from .workloads import Workload, check_fixed_nms, check_graph_replay, inputs_for, select


def test_workload(benchmark, workload, side):
    inputs = inputs_for(workload)
    expected = workload.torchvision_fn(*inputs)
    actual = workload.pydet_fn(*inputs)
    mismatch = workload.check(inputs, expected, actual)
    assert not mismatch, f"{workload.name}: {mismatch}"
    fn = workload.torchvision_fn if side == "torchvision" else workload.pydet_fn
    benchmark.group = workload.name
    benchmark(fn, *inputs)


# --------------------------------------------------------------------------------------------------------
# --device cuda, checked without a GPU: argument parsing, the refusal to run, where results go, the GPU
# workload list (built for the "meta" device, which needs no GPU) and the CUDA timing and memory paths
# (with torch.cuda's functions replaced by fakes).
# --------------------------------------------------------------------------------------------------------


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, ImageList):
        yield obj.tensors
    elif isinstance(obj, (tuple, list)):
        for x in obj:
            yield from _tensors(x)
    elif isinstance(obj, dict):
        for x in obj.values():
            yield from _tensors(x)


def test_device_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        runner.main(["--device", "tpu", "--list"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert runner.main(["--device", "cuda", "--list", "--ops", "nms"]) == 0
    assert "nms[random 100k]" in capsys.readouterr().out
    assert runner.main(["--device", "cpu", "--list", "--ops", "nms"]) == 0
    assert "100k" not in capsys.readouterr().out


def test_cuda_without_gpu_is_refused(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runner.main(["--device", "cuda", "--ops", "box_area", "--quick"]) == 2
    out, err = capsys.readouterr()
    assert "torch.cuda.is_available() is False" in err
    assert "|" not in out  # nothing ran


def test_cuda_without_extension_kernels_is_refused(monkeypatch, capsys):
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        torch._C,
        "_dispatch_has_kernel_for_dispatch_key",
        lambda op, key: False if op.startswith("pydet_ops::") else has_kernel(op, key),
    )
    assert runner.main(["--device", "cuda", "--ops", "box_area", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA kernels" in err and "pydet_ops::nms" in err


def test_results_dir_per_gpu_model():
    assert runner.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert runner.device_slug("NVIDIA A100-SXM4-40GB") == "nvidia-a100-sxm4-40gb"
    assert runner.device_slug("  ") == "gpu"
    cuda = runner.results_dir({"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3"})
    assert cuda == os.path.join(runner.RESULTS_DIR, "nvidia-h100-80gb-hbm3")
    assert runner.results_dir({"device": "cpu"}) == os.path.join(runner.RESULTS_DIR, "cpu")


def test_driver_version_from_proc():
    closed = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  Tue Mar  5 22:23:56 UTC 2024\n"
    opened = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs)\n"
    assert runner.parse_nvidia_driver(closed) == "550.54.15"
    assert runner.parse_nvidia_driver(opened) == "580.65.06"
    assert runner.parse_nvidia_driver("") == ""


def test_cuda_environment_records_the_gpu(monkeypatch):
    props = types.SimpleNamespace(major=9, minor=0, total_memory=80 << 30)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(runner, "_nvidia_driver", lambda: "580.65.06")
    env = runner.environment(2, "cuda")
    assert env["device"] == "cuda" and env["gpu"] == "NVIDIA H100 80GB HBM3"
    assert env["gpu_capability"] == "sm_90" and env["cuda_driver"] == "580.65.06"
    assert env["cuda"] == (torch.version.cuda or "unknown")
    line = runner.header(env)
    assert "NVIDIA H100 80GB HBM3" in line and "driver 580.65.06" in line
    cpu = runner.environment(2, "cpu")
    assert "gpu" not in cpu and runner.header(cpu).endswith("| 2 threads")


def test_cpu_workloads_unchanged_by_the_gpu_list():
    cpu = select(device="cpu")
    assert all(w.device == "cpu" and not w.skip for w in cpu)
    gpu = {w.name.replace("CUDA inference", "CPU inference"): w for w in select(device="meta")}
    # Every CPU case is on the GPU list too, with the same shapes.
    for w in cpu:
        assert w.name in gpu, w.name
        assert gpu[w.name].shape == w.shape
    # And no GPU-only case is on the CPU list.
    assert not [w.name for w in cpu if w.op in ("nms_fixed", "roi_align_bwd") or "bf16" in w.case or "100k" in w.case]
    assert [w.name for w in cpu if "both sides" in w.case] == ["roi_align[7x7 sr=2 channels_last, both sides]"]


def test_gpu_list_has_the_acceptance_cases():
    names = {w.name for w in select(device="meta")}
    wanted = [
        "nms[random 20k]",
        "nms[random 100k]",
        "batched_nms[20k x 80 classes]",
        "roi_align[7x7 sr=2 NCHW]",
        "roi_align[7x7 sr=2 bf16 channels_last, torchvision autocast]",
        "roi_align_bwd[7x7 sr=2 NCHW]",
        "nms_fixed[random 20k, max 1000, eager]",
        "nms_fixed[random 20k, max 1000, CUDA graph replay]",
        "roi_pool[7x7 channels_last, both sides]",
        "MultiScaleRoIAlign[4 FPN levels, 800x1344, channels_last, both sides]",
    ]
    for op in ("box_iou", "generalized_box_iou", "distance_box_iou", "complete_box_iou"):
        wanted += [f"{op}[1000x2000]", f"{op}[anchors 200000x20]"]
    assert [n for n in wanted if n not in names] == []


def test_gpu_inputs_are_built_on_the_device():
    # One case per op (every kind of input: tensors, channels_last maps, FPN dicts, ImageLists, image lists),
    # plus the bf16 one.
    seen, cases = set(), []
    for w in select(quick=True, device="meta"):
        if w.op not in seen or "bf16" in w.case:
            seen.add(w.op)
            cases.append(w)
    assert len(cases) > 10
    for w in cases:
        assert w.device == "meta"
        tensors = list(_tensors(inputs_for(w)))
        assert tensors, w.name
        assert all(t.device.type == "meta" for t in tensors), w.name
    bf16 = next(w for w in cases if "bf16" in w.case)
    x, rois = inputs_for(bf16)
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    assert rois.dtype == torch.float32
    cl = next(w for w in select("roi_align[7x7 sr=2 channels_last]", device="meta"))
    x, x_cl, rois = inputs_for(cl)
    assert x.is_contiguous() and x_cl.is_contiguous(memory_format=torch.channels_last)


def test_torchvision_without_cuda_kernels_is_skipped(monkeypatch, capsys):
    has_kernel = torch._C._dispatch_has_kernel_for_dispatch_key
    monkeypatch.setattr(
        torch._C,
        "_dispatch_has_kernel_for_dispatch_key",
        lambda op, key: False if op == "torchvision::roi_pool" else has_kernel(op, key),
    )
    pools = select("roi_pool", device="cuda")
    assert pools and all("torchvision::roi_pool" in w.skip for w in pools)
    assert all(not w.skip for w in select("box_iou", device="cuda"))
    assert runner.main(["--device", "cuda", "--list", "--ops", "roi_pool"]) == 0
    assert "skipped on cuda" in capsys.readouterr().out


class _FakeEvent:
    def __init__(self, log, enable_timing=False):
        self.log = log

    def record(self):
        self.log.append("record")

    def synchronize(self):
        self.log.append("event sync")

    def elapsed_time(self, other):
        return 2.0  # milliseconds


def test_cuda_timing_synchronises_around_each_call(monkeypatch):
    log = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: log.append("sync"))
    monkeypatch.setattr(torch.cuda, "Event", lambda enable_timing=False: _FakeEvent(log, enable_timing))
    tv, ours = timing.compare(lambda: log.append("a"), lambda: log.append("b"), repeats=3, batch_s=0.005,
                              device="cuda")
    assert tv["median"] == pytest.approx(2e-3) and ours["median"] == pytest.approx(2e-3)
    assert tv["repeats"] == 3
    calls = [i for i, x in enumerate(log) if x in ("a", "b")]
    # One warm-up and one sizing call per side, then 3 batches per side of 2 calls (2 ms each, 5 ms batches).
    assert len(calls) == 2 * 2 + 2 * 3 * 2
    for i in calls:
        assert log[i - 2 : i] == ["sync", "record"] and log[i + 1 : i + 3] == ["record", "event sync"]


def test_cuda_memory_is_the_allocator_peak(monkeypatch):
    state = {"allocated": 1000, "peak": 0, "reset": False}

    def reset():
        state["reset"] = True
        state["peak"] = state["allocated"]

    def fn():
        assert state["reset"]  # the peak is reset before the call
        state["peak"] = state["allocated"] + 5000
        return object()

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: reset())
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])
    assert timing.extra_cuda_bytes(fn) == 5000


def test_cuda_workload_uses_cuda_timing_and_memory(monkeypatch):
    calls = {}
    w = Workload("box_area", "tiny", "[8,4]", lambda g: (torch.rand(8, 4, generator=g),), torch.sum, torch.sum,
                 lambda inputs, e, a: "", device="cuda")
    monkeypatch.setattr(runner, "inputs_for", lambda workload: workload.make_inputs(torch.Generator()))
    monkeypatch.setattr(timing, "extra_cuda_bytes", lambda fn: calls.setdefault("memory", 123))
    monkeypatch.setattr(timing, "extra_resident_bytes", lambda fn: pytest.fail("CPU memory measured on cuda"))

    def compare(a, b, repeats, batch_s, device="cpu"):
        calls["device"] = device
        stats = {"median": 1e-3, "min": 1e-3, "max": 1e-3, "iqr": 0.0, "repeats": repeats}
        return stats, dict(stats)

    monkeypatch.setattr(timing, "compare", compare)
    row = runner.run_workload(w, 3, 0.01, measure_memory=True)
    assert calls["device"] == "cuda" and row["memory"] == {"torchvision": 123, "pydet_ops": 123}


def test_cuda_run_goes_on_after_a_failing_case(monkeypatch, capsys):
    monkeypatch.setattr(runner, "cuda_problem", lambda: "")
    monkeypatch.setattr(runner, "cuda_environment", lambda: {
        "gpu": "NVIDIA H100 80GB HBM3", "gpu_capability": "sm_90", "cuda": "13.0", "cuda_driver": "580.65.06"})
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)

    def run(workload, repeats, batch_s, measure_memory):
        if workload.op == "box_area":
            raise RuntimeError("CUDA out of memory\nmore detail")
        stats = {"median": 1e-3, "min": 1e-3, "max": 1e-3, "iqr": 0.0, "repeats": 1}
        return {"op": workload.op, "case": workload.case, "shape": workload.shape, "sweep": "", "size": 0,
                "torchvision": stats, "pydet_ops": stats, "speedup": 1.0,
                "memory": {"torchvision": 0, "pydet_ops": 0}, "match": True, "mismatch": "", "profile": None}

    monkeypatch.setattr(runner, "run_workload", run)
    assert runner.main(["--device", "cuda", "--ops", "box_area,box_convert", "--quick"]) == 1
    out, err = capsys.readouterr()
    assert "NVIDIA H100 80GB HBM3" in out and "| box_convert" in out and "| box_area " not in out
    assert "box_area[200k] FAILED: RuntimeError: CUDA out of memory" in err


def test_fixed_nms_checks():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [80, 80, 90, 90]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    inputs = (boxes, scores, 0.5, 3)
    expected = torch.tensor([0, 2, 3])
    assert check_fixed_nms(inputs, expected, (torch.tensor([0, 2, 3]), torch.tensor(3))) == ""
    assert "count" in check_fixed_nms(inputs, expected, (torch.tensor([0, 2, -1]), torch.tensor(2)))
    inputs = (boxes, scores, 0.5, 4)
    assert check_fixed_nms(inputs, expected, (torch.tensor([0, 2, 3, -1]), torch.tensor(3))) == ""
    assert "padding" in check_fixed_nms(inputs, expected, (torch.tensor([0, 2, 3, 1]), torch.tensor(3)))
    # The replay is compared with an eager call of the real op.
    eager = pydet_ops.nms_fixed(*inputs)
    assert check_graph_replay(inputs, expected, eager) == ""
    assert "differs" in check_graph_replay(inputs, expected, (torch.tensor([0, 2, -1, -1]), torch.tensor(2)))


def test_graph_replay_note():
    def row(case, t, match=True):
        stats = {"median": t}
        return {"op": "nms_fixed", "case": case, "torchvision": stats, "pydet_ops": stats, "match": match,
                "mismatch": "" if match else "CUDA graph replay differs from the eager call"}

    rows = [row("random 20k, max 1000, eager", 4e-4), row("random 20k, max 1000, CUDA graph replay", 1e-4)]
    note = report.format_graph_replays(rows)
    assert "eager 400.0 us, CUDA graph replay 100.0 us (4.0x)" in note and note.endswith(": yes")
    assert report.format_graph_replays(rows[:1]) == ""


def test_profiled_steps_synchronise_on_a_gpu():
    from .detection import _labelled

    log = []
    owner = types.SimpleNamespace(step=lambda x: log.append("step") or x + 1)
    with _labelled([(owner, "step", "label", lambda: log.append("sync"))]):
        assert owner.step(1) == 2
    assert log == ["sync", "step", "sync"]
    assert owner.step(1) == 2 and log[-1] == "step"  # restored
    with _labelled([(owner, "step", "label")]):  # CPU: no synchronisation
        owner.step(1)
    assert log[-2:] == ["step", "step"]


def test_gpu_plots_are_titled_with_the_gpu(tmp_path):
    stats = {"median": 1e-3}
    rows = [{"op": "nms", "case": "random 20k", "sweep": "", "size": 0, "torchvision": stats,
             "pydet_ops": {"median": 1e-4}, "speedup": 10.0, "match": True}]
    env = {"device": "cuda", "gpu": "NVIDIA H100 80GB HBM3", "cuda": "13.0", "torch": torch.__version__}
    assert report.plot(rows, env, str(tmp_path)) == [str(tmp_path / "speedup.png")]
