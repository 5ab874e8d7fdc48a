"""Shared fixtures and box generators for the pydet_ops test suite.

* ``isa``: parametrizes a test over every CPU instruction-set level this machine supports, activating it for
  the duration of the test and restoring the previous level afterwards.
* Box generators: seeded uniform boxes, clustered (RPN-like) boxes, scores with and without ties, and a set
  of crafted awkward inputs (identical, negative, large, inverted and zero-size boxes).

Test modules import the generators directly (``from conftest import uniform_boxes``).

Hypothesis profiles (chosen with the environment variable ``PYDET_HYPOTHESIS_PROFILE``, default ``ci``):

* ``ci``: derandomized (every run draws the same examples, so a failure reproduces exactly), no deadline, and
  a read-only view of the example database committed in ``tests/hypothesis-examples/``: the examples saved
  there are replayed before the generated ones, and nothing is ever written.
* ``dev``: random seeds, ten times the examples (tests/test_fuzz.py scales its per-test budgets by the
  profile's ``max_examples``), and the same folder as a writable database: a failure found locally is saved
  (shrunk) there, so committing the new files makes ``ci`` replay it from then on
  (``PYDET_HYPOTHESIS_PROFILE=dev python -m pytest tests/test_fuzz.py``). tests/hypothesis-examples/README.md
  says more.

Tests that set ``database=None`` in their own settings never use the database; every test inherits the
profile's derandomization. Hypothesis' other files (its home directory) go to the temporary directory.
"""

import contextlib
import os
import tempfile

import pytest
import torch
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase, ReadOnlyDatabase

import pydet_ops

# Hypothesis' home directory (caches, and the default database no profile here uses) goes to the temporary
# directory; only the "dev" profile writes into the repository, and only into tests/hypothesis-examples/.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), "pydet_ops_tests_hypothesis"))

HYPOTHESIS_EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hypothesis-examples")
HYPOTHESIS_PROFILE_VARIABLE = "PYDET_HYPOTHESIS_PROFILE"

# settings() refuses derandomize=True together with a database (a database makes runs depend on its
# contents); here the database is read-only and committed, so runs stay reproducible. The database is
# therefore set on a child of the derandomized settings, which Hypothesis accepts and honours.
settings.register_profile(
    "ci",
    parent=settings(derandomize=True, deadline=None, max_examples=100),
    database=ReadOnlyDatabase(DirectoryBasedExampleDatabase(HYPOTHESIS_EXAMPLES_DIR)),
)
settings.register_profile(
    "dev",
    derandomize=False,
    deadline=None,
    max_examples=1000,
    database=DirectoryBasedExampleDatabase(HYPOTHESIS_EXAMPLES_DIR),
)
settings.load_profile(os.environ.get(HYPOTHESIS_PROFILE_VARIABLE, "ci"))

ISA_LEVELS = ("default", "avx2", "avx512")


def _set_isa(name: str) -> str:
    return torch.ops.pydet_ops._set_cpu_capability(name)


def _supported_isa_levels():
    original = pydet_ops.cpu_capability()
    supported = []
    try:
        for name in ISA_LEVELS:
            if _set_isa(name) == name:
                supported.append(name)
    finally:
        _set_isa(original)
    return supported


SUPPORTED_ISAS = _supported_isa_levels()


@contextlib.contextmanager
def isa_level(name: str):
    """Runs the body with the CPU kernels at ISA level ``name`` (must be supported)."""
    original = pydet_ops.cpu_capability()
    active = _set_isa(name)
    assert active == name, f"could not activate {name}, got {active}"
    try:
        yield name
    finally:
        _set_isa(original)


@pytest.fixture(params=SUPPORTED_ISAS)
def isa(request):
    """Every test using this fixture runs once per supported ISA level, with that level active."""
    with isa_level(request.param):
        assert pydet_ops.cpu_capability() == request.param
        yield request.param


# ---------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def uniform_boxes(n, seed=0, img=1000.0, lo=4.0, hi=200.0, dtype=torch.float32, integer=False):
    """``n`` xyxy boxes with (x1, y1) uniform in [0, img) and (w, h) uniform in [lo, hi).

    With ``integer=True`` every coordinate is a whole number (exact under shifts and in any float type).
    """
    g = _gen(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * img
    wh = lo + torch.rand(n, 2, generator=g, dtype=torch.float64) * (hi - lo)
    if integer:
        xy = xy.floor()
        wh = wh.floor().clamp(min=1)
    return torch.cat([xy, xy + wh], dim=1).to(dtype)


def clustered_boxes(n, clusters, seed=0, img=1000.0, jitter=3.0, lo=16.0, hi=96.0, dtype=torch.float32):
    """RPN-like boxes: ``n`` jittered copies of ``clusters`` base boxes (many heavy overlaps)."""
    g = _gen(seed)
    centres = torch.rand(clusters, 2, generator=g, dtype=torch.float64) * img
    sizes = lo + torch.rand(clusters, 2, generator=g, dtype=torch.float64) * (hi - lo)
    which = torch.randint(0, clusters, (n,), generator=g)
    c = centres[which] + torch.randn(n, 2, generator=g, dtype=torch.float64) * jitter
    half = sizes[which] * (1 + 0.1 * torch.randn(n, 2, generator=g, dtype=torch.float64)).clamp(min=0.5) / 2
    return torch.cat([c - half, c + half], dim=1).to(dtype)


def distinct_scores(n, seed=0, dtype=torch.float32):
    """A random permutation of ``n`` distinct values in (0, 1), distinct in every float type used (n < 2048
    for half types)."""
    g = _gen(seed)
    perm = torch.randperm(n, generator=g).to(torch.float64)
    return ((perm + 1) / (n + 1)).to(dtype)



def nms_opcheck_samples():
    """(boxes, scores, iou_threshold) for opcheck of nms: float32 and float64 clusters, and no boxes."""
    return [
        (clustered_boxes(40, 4, seed=1), distinct_scores(40, seed=2), 0.5),
        (clustered_boxes(300, 6, seed=3, dtype=torch.float64), distinct_scores(300, seed=4, dtype=torch.float64), 0.3),
        (torch.empty(0, 4), torch.empty(0), 0.5),
    ]


def tied_scores(n, seed=0, levels=4, dtype=torch.float32):
    """Scores drawn from ``levels`` distinct values: many exact ties."""
    g = _gen(seed)
    return (torch.randint(0, levels, (n,), generator=g).to(torch.float64) / levels).to(dtype)


def crafted_box_sets(dtype=torch.float32, seed=0):
    """Named sets of awkward xyxy boxes; every set has a few boxes that overlap each other."""
    sets = {}
    sets["identical"] = torch.tensor([[10.0, 20.0, 50.0, 80.0]], dtype=torch.float64).repeat(6, 1)
    sets["negative"] = uniform_boxes(24, seed=seed + 1, img=300.0, lo=5.0, hi=120.0, dtype=torch.float64) - 400.0
    large = uniform_boxes(24, seed=seed + 2, img=9e5, lo=10.0, hi=1e4, dtype=torch.float64) + 1e5
    # Pack a few of them close together so that large boxes overlap too.
    large[12:] = large[:12] + torch.tensor([50.0, 30.0, 80.0, 20.0], dtype=torch.float64)
    sets["large"] = large
    inverted = uniform_boxes(16, seed=seed + 3, img=100.0, lo=5.0, hi=60.0, dtype=torch.float64)
    inverted[0::4] = inverted[0::4][:, [2, 1, 0, 3]]  # x2 < x1
    inverted[1::4] = inverted[1::4][:, [0, 3, 2, 1]]  # y2 < y1
    inverted[2::4] = inverted[2::4][:, [2, 3, 0, 1]]  # both (positive area)
    sets["inverted"] = inverted
    zero = uniform_boxes(12, seed=seed + 4, img=100.0, lo=5.0, hi=60.0, dtype=torch.float64)
    zero[0::3, 2] = zero[0::3, 0]  # zero width
    zero[1::3, 3] = zero[1::3, 1]  # zero height
    zero[2::3, 2:] = zero[2::3, :2]  # a point
    zero = torch.cat([zero, torch.zeros(1, 4, dtype=torch.float64)])
    sets["zero_size"] = zero
    sets["mixed"] = torch.cat(
        [uniform_boxes(16, seed=seed + 5, img=100.0, lo=5.0, hi=60.0, dtype=torch.float64)]
        + [sets[k][:6] for k in ("identical", "negative", "inverted", "zero_size")]
    )
    return {name: boxes.to(dtype) for name, boxes in sets.items()}


CRAFTED_NAMES = ("identical", "negative", "large", "inverted", "zero_size", "mixed")


def assert_bitwise_equal(actual, expected):
    """Same dtype, same shape, same values (NaN where NaN; +0 and -0 count as equal)."""
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True)


def ulp_close(actual, expected, ulps=4):
    """Same NaN pattern and values within ``ulps`` units in the last place of ``expected``'s dtype."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    eps = torch.finfo(expected.dtype).eps
    torch.testing.assert_close(actual, expected, rtol=ulps * eps, atol=ulps * eps, equal_nan=True)


__all__ = [
    "CRAFTED_NAMES",
    "ISA_LEVELS",
    "SUPPORTED_ISAS",
    "assert_bitwise_equal",
    "clustered_boxes",
    "crafted_box_sets",
    "distinct_scores",
    "isa_level",
    "tied_scores",
    "ulp_close",
    "uniform_boxes",
]
