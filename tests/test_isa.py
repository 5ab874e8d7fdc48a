"""CPU instruction-set levels: selection through PYDET_OPS_CPU_CAPABILITY and identical results at every level."""

import os
import subprocess
import sys

import pytest
import torch

import pydet_ops as ops
from conftest import (
    ISA_LEVELS,
    SUPPORTED_ISAS,
    assert_bitwise_equal,
    clustered_boxes,
    crafted_box_sets,
    distinct_scores,
    isa_level,
    tied_scores,
    uniform_boxes,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRINT_LEVEL = "import pydet_ops; print(pydet_ops.cpu_capability())"
RUN_AN_OP = (
    "import torch, pydet_ops\n"
    "print(pydet_ops.nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([1.0]), 0.5).tolist())\n"
)

# (environment value or None for unset, code) for every subprocess this module needs.
RUNS = {f"env-{level}": (level, PRINT_LEVEL) for level in ISA_LEVELS}
RUNS["env-unset"] = (None, PRINT_LEVEL)
RUNS["env-empty"] = ("", PRINT_LEVEL)
RUNS["env-invalid"] = ("sse9", PRINT_LEVEL)
RUNS["env-invalid-op"] = ("sse9", RUN_AN_OP)


@pytest.fixture(scope="module")
def subprocess_results():
    """Starts every subprocess at once (each one imports torch) and collects (returncode, stdout, stderr)."""
    procs = {}
    for name, (value, code) in RUNS.items():
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONDONTWRITEBYTECODE="1")
        env.pop("PYDET_OPS_CPU_CAPABILITY", None)
        if value is not None:
            env["PYDET_OPS_CPU_CAPABILITY"] = value
        procs[name] = subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        results[name] = (proc.returncode, out.strip(), err)
    return results


def _max_supported():
    return SUPPORTED_ISAS[-1]


def _expected_level(requested):
    # The variable caps the level: it never raises it above what the CPU supports.
    return ISA_LEVELS[min(ISA_LEVELS.index(requested), ISA_LEVELS.index(_max_supported()))]


@pytest.mark.parametrize("level", ISA_LEVELS)
def test_environment_variable_caps_the_level(subprocess_results, level):
    rc, out, err = subprocess_results[f"env-{level}"]
    assert rc == 0, err
    assert out == _expected_level(level)
    if level in SUPPORTED_ISAS:
        assert out == level


def test_default_level_is_the_widest_supported(subprocess_results):
    for name in ("env-unset", "env-empty"):
        rc, out, err = subprocess_results[name]
        assert rc == 0, err
        assert out == _max_supported()


@pytest.mark.parametrize("name", ["env-invalid", "env-invalid-op"])
def test_invalid_environment_value_is_a_clear_error(subprocess_results, name):
    rc, out, err = subprocess_results[name]
    assert rc != 0
    assert "PYDET_OPS_CPU_CAPABILITY" in err
    assert "sse9" in err
    assert "'default', 'avx2', 'avx512'" in err


def test_supported_levels_include_default():
    assert SUPPORTED_ISAS[0] == "default"
    assert list(SUPPORTED_ISAS) == [lvl for lvl in ISA_LEVELS if lvl in SUPPORTED_ISAS]


def test_set_capability_returns_the_active_level():
    original = ops.cpu_capability()
    try:
        for level in ISA_LEVELS:
            active = torch.ops.pydet_ops._set_cpu_capability(level)
            assert active == _expected_level(level)
            assert ops.cpu_capability() == active
    finally:
        torch.ops.pydet_ops._set_cpu_capability(original)
    assert ops.cpu_capability() == original


def test_isa_fixture_restores_the_level():
    original = ops.cpu_capability()
    for level in SUPPORTED_ISAS:
        with isa_level(level):
            assert ops.cpu_capability() == level
        assert ops.cpu_capability() == original


# ---------------------------------------------------------------------------------------------------------
# Same results at every level
# ---------------------------------------------------------------------------------------------------------


def _at_every_level(fn):
    results = {}
    for level in SUPPORTED_ISAS:
        with isa_level(level):
            results[level] = fn()
    return results


def _nms_inputs():
    cases = {}
    for n in (0, 1, 17, 255, 256, 3000):
        cases[f"uniform-{n}"] = (uniform_boxes(n, seed=n, img=30.0 * max(1, n) ** 0.5), distinct_scores(n, seed=n))
    for n, clusters in ((600, 10), (5000, 80)):
        cases[f"clustered-{n}"] = (clustered_boxes(n, clusters, seed=n), tied_scores(n, seed=n, levels=20))
        boxes64 = clustered_boxes(n, clusters, seed=n + 1, dtype=torch.float64)
        cases[f"clustered64-{n}"] = (boxes64, distinct_scores(n, seed=n + 1, dtype=torch.float64))
    mixed = crafted_box_sets(torch.float32)["mixed"].repeat(10, 1)
    mixed[::7, 1] = float("nan")
    mixed[3::11, 2] = float("inf")
    scores = distinct_scores(mixed.shape[0], seed=5)
    scores[::13] = float("nan")
    cases["crafted-nonfinite"] = (mixed, scores)
    cases["half"] = (uniform_boxes(400, seed=6, img=300.0).half(), distinct_scores(400, seed=6).half())
    return cases


NMS_CASES = _nms_inputs()


@pytest.mark.parametrize("case", list(NMS_CASES))
@pytest.mark.parametrize("threshold", [-0.1, 0.0, 0.5, 0.9, 1.0])
def test_nms_is_identical_at_every_level(case, threshold):
    boxes, scores = NMS_CASES[case]
    results = _at_every_level(lambda: ops.nms(boxes, scores, threshold))
    first = results[SUPPORTED_ISAS[0]]
    for level, keep in results.items():
        assert torch.equal(keep, first), level


@pytest.mark.parametrize("case", list(NMS_CASES))
def test_batched_nms_is_identical_at_every_level(case):
    boxes, scores = NMS_CASES[case]
    n = boxes.shape[0]
    idxs = torch.randint(-3, 4, (n,), generator=torch.Generator().manual_seed(n))
    results = _at_every_level(lambda: ops.batched_nms(boxes, scores, idxs, 0.5))
    first = results[SUPPORTED_ISAS[0]]
    for level, keep in results.items():
        assert torch.equal(keep, first), level


OVERLAP = {
    "iou": ops.box_iou,
    "giou": ops.generalized_box_iou,
    "diou": ops.distance_box_iou,
    "ciou": ops.complete_box_iou,
}


def _overlap_inputs():
    cases = {
        "uniform": (uniform_boxes(70, seed=1), uniform_boxes(130, seed=2)),
        "float64": (uniform_boxes(33, seed=3, dtype=torch.float64), uniform_boxes(47, seed=4, dtype=torch.float64)),
        "batched": (uniform_boxes(60, seed=5).reshape(3, 20, 4), uniform_boxes(17, seed=6)),
        "half": (uniform_boxes(20, seed=7).bfloat16(), uniform_boxes(31, seed=8).half()),
        "int": (uniform_boxes(20, seed=9, integer=True).long(), uniform_boxes(9, seed=10, integer=True).long()),
    }
    crafted = torch.cat(list(crafted_box_sets(torch.float32).values()))
    crafted[::9, 0] = float("nan")
    crafted[4::10, 3] = float("inf")
    cases["crafted"] = (crafted, crafted)
    return cases


OVERLAP_CASES = _overlap_inputs()


@pytest.mark.parametrize("case", list(OVERLAP_CASES))
@pytest.mark.parametrize("kind", list(OVERLAP))
def test_overlap_is_identical_at_every_level(kind, case):
    b1, b2 = OVERLAP_CASES[case]
    results = _at_every_level(lambda: OVERLAP[kind](b1, b2))
    first = results[SUPPORTED_ISAS[0]]
    for level, out in results.items():
        if kind == "ciou":
            torch.testing.assert_close(out, first, rtol=1e-6, atol=1e-6, equal_nan=True, msg=level)
        else:
            assert_bitwise_equal(out, first)


def test_results_do_not_depend_on_the_number_of_threads():
    boxes = clustered_boxes(4000, 60, seed=20)
    scores = tied_scores(4000, seed=21, levels=50)
    idxs = torch.randint(0, 7, (4000,), generator=torch.Generator().manual_seed(22))
    b1, b2 = uniform_boxes(300, seed=23), uniform_boxes(500, seed=24)

    def run():
        return (
            ops.nms(boxes, scores, 0.5),
            ops.batched_nms(boxes, scores, idxs, 0.5),
            *(fn(b1, b2) for fn in OVERLAP.values()),
            ops.box_iou(b1.reshape(3, 100, 4), b2),
        )

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run()
        torch.set_num_threads(max(2, threads))
        multi = run()
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(single, multi):
        assert_bitwise_equal(a, b)
