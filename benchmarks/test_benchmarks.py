"""pytest-benchmark view of the workloads: ``pytest benchmarks/ --benchmark-only``.

Each workload is one benchmark group holding a torchvision and a pydet_ops case, so the comparison table shows
the two side by side. Outputs are checked equal before timing.
"""

from .workloads import inputs_for


def test_workload(benchmark, workload, side):
    inputs = inputs_for(workload)
    expected = workload.torchvision_fn(*inputs)
    actual = workload.pydet_fn(*inputs)
    mismatch = workload.check(inputs, expected, actual)
    assert not mismatch, f"{workload.name}: {mismatch}"
    fn = workload.torchvision_fn if side == "torchvision" else workload.pydet_fn
    benchmark.group = workload.name
    benchmark(fn, *inputs)
