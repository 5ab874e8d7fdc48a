"""Unusual and invalid input: for each public op and module, each bad input and the outcome it must give.

Every row of ``CASES`` is ``(id, call, required outcome)``:

* ``E(id, call, exc, regex)``: the call must raise ``exc`` with a message matching ``regex`` (which names the
  argument);
* ``R(id, call, check)``: the call must return, and ``check(result)`` states the defined result (equal to the
  contiguous call, empty with the right shape, NaN rows, zeros, equal to torchvision's, ...).

A row whose required outcome the library does not give yet carries ``bug="..."``: it runs as
``xfail(strict=True)``, so it fails as soon as the library is fixed and the mark is forgotten.

Each row runs in a worker process (``_Worker``), not in pytest's: a crash (segfault, abort) or a hang fails
that row only, and a fresh worker takes the next one. The worker is this file run as a script
(``python tests/test_bad_inputs.py --worker``); it imports torch and pydet_ops once, looks rows up by id in
the module-level table and answers one line of JSON per row. It runs under an address-space limit, so that
a row that would allocate gigabytes fails quickly instead of starving the machine (not under AddressSanitizer,
whose shadow memory needs a large address space: scripts/sanitize.sh runs this file too, and the worker
inherits the preloaded runtime).

Rows are grouped by op; helper constructors come first. Inputs of more than 2^31 elements are built as
zero-stride (expanded) views where the op's result stays small; where it cannot (the result itself, or a copy
the op must make, would be that large) a comment at the op's group says why the row is absent.
"""

import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

import pytest
import torch

import pydet_ops as ops

RAW = torch.ops.pydet_ops
META = torch.device("meta")
NAN, INF = float("nan"), float("inf")
HUGE = 2**31 + 1  # rows of an expanded input with more than 2^31 elements of each column

# Python-side helpers (box_area, box_convert, clip_boxes_to_image, remove_small_boxes) may raise either type for
# a wrong shape: kernels raise RuntimeError, Python checks ValueError (pydet_ops/boxes.py's convention).
SHAPE_ERRORS = (RuntimeError, ValueError)


# ---------------------------------------------------------------------------------------------------------
# Input constructors
# ---------------------------------------------------------------------------------------------------------


def _boxes(n=5, dtype=torch.float32):
    xy = torch.arange(2 * n, dtype=torch.float64).reshape(n, 2)
    return torch.cat([xy, xy + 3], dim=1).to(dtype)


def _scores(n=5, dtype=torch.float32):
    return torch.linspace(0.1, 0.9, n, dtype=dtype)


def _idxs(n=5, dtype=torch.int64):
    return (torch.arange(n) % 2).to(dtype)


def _t(rows, dtype=torch.float32):
    return torch.tensor(rows, dtype=dtype)


def _fmap(n=1, c=2, h=8, w=8, dtype=torch.float32):
    """A deterministic feature map [n, c, h, w] with distinct values."""
    return torch.arange(n * c * h * w, dtype=torch.float64).reshape(n, c, h, w).mul(0.37).sin().to(dtype)


def _strided(t):
    """A view with the values of ``t`` whose last dimension has stride 2 (not contiguous)."""
    view = torch.stack([t, torch.full_like(t, 7)], dim=-1)[..., 0]
    assert not view.is_contiguous() and torch.equal(view, t)
    return view


def _transposed(t):
    """A 2-D view with the values of ``t`` in column-major order (not contiguous)."""
    view = t.t().contiguous().t()
    assert not view.is_contiguous() and torch.equal(view, t)
    return view


def _expanded(rows, cols=4):
    """``rows`` x ``cols`` zeros without memory: a zero-stride view of one row."""
    return torch.zeros(1, cols).expand(rows, cols)


def _features(c=2, dtype=torch.float32, **replace):
    """Two FPN levels for a 64 x 64 image: p2 16 x 16 (scale 1/4) and p3 8 x 8 (scale 1/8)."""
    feats = OrderedDict([("p2", _fmap(1, c, 16, 16, dtype)), ("p3", _fmap(1, c, 8, 8, dtype))])
    feats.update(replace)
    return feats


def _image_list(h=32, w=32, n=1):
    from torchvision.models.detection.image_list import ImageList

    return ImageList(torch.zeros(n, 3, h, w), [(h, w)] * n)


def _tv_anchor_generator(sizes=((32,),), ratios=((1.0,),)):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    return AnchorGenerator(sizes, ratios)


def _tv():
    import torchvision.ops

    return torchvision.ops


def _tv_box_coder(*args):
    from torchvision.models.detection._utils import BoxCoder

    return BoxCoder(*args)


B, S, I = _boxes(), _scores(), _idxs()
X = _fmap()  # [1, 2, 8, 8]
ROI = _t([[0, 1.0, 1.5, 6.0, 5.0], [0, 0.5, 0.0, 3.0, 7.5]])  # two RoIs on image 0
W = (10.0, 10.0, 5.0, 5.0)  # BoxCoder weights
DELTAS = _t([[0.1, -0.2, 0.3, -0.4], [0.0, 0.5, -1.0, 1.0], [-0.3, 0.2, 0.1, 0.0], [1, 1, 1, 1], [0, 0, 0, 0]])
FPN_BOXES = [_t([[0, 0, 20, 20], [4, 4, 60, 60], [10, 2, 30, 50]])]
FPN_IMAGES = [(64, 64)]


# ---------------------------------------------------------------------------------------------------------
# Required outcomes
# ---------------------------------------------------------------------------------------------------------


class Case:
    def __init__(self, id, call, outcome, bug=None):
        self.id, self.call, self.outcome, self.bug = id, call, outcome, bug


class Raises:
    def __init__(self, exc, match):
        self.exc, self.match = exc, match

    def describe(self):
        names = self.exc if isinstance(self.exc, tuple) else (self.exc,)
        return f"{' or '.join(e.__name__ for e in names)} matching {self.match!r}"


class Gives:
    def __init__(self, check, what):
        self.check, self.what = check, what

    def describe(self):
        return self.what


def E(id, call, exc, match, bug=None):
    """Row: the call raises ``exc`` with a message matching ``match``."""
    return Case(id, call, Raises(exc, match), bug)


def R(id, call, outcome, bug=None):
    """Row: the call returns a result satisfying ``outcome`` (a ``Gives``)."""
    return Case(id, call, outcome, bug)


def _assert_equal(actual, expected, exact=True):
    tol = dict(rtol=0, atol=0) if exact else dict(rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(actual, expected, equal_nan=True, **tol)


def same_as(reference, exact=True, what="the result of the reference call"):
    """The result equals ``reference()`` (same dtype, shape, device; NaN where it is NaN)."""
    return Gives(lambda r: _assert_equal(r, reference(), exact), ("equal to " if exact else "close to ") + what)


def same_as_contiguous(reference):
    return same_as(reference, what="the result for contiguous inputs")


def same_as_torchvision(reference, exact=True):
    return same_as(reference, exact, what="torchvision's result")


def equals(expected, dtype=None):
    """The result equals the literal ``expected`` (as a tensor of ``dtype``, default the result's)."""

    def check(r):
        if not isinstance(r, torch.Tensor):  # a Python value (list, tuple, bool): compared as a list
            assert list(r) == list(expected), f"{r!r} != {expected!r}"
            return
        _assert_equal(r, torch.as_tensor(expected, dtype=dtype if dtype is not None else r.dtype))
        if dtype is not None:
            assert r.dtype == dtype, f"dtype {r.dtype}, expected {dtype}"

    return Gives(check, f"equal to {expected!r}" + (f" ({dtype})" if dtype is not None else ""))


def empty(shape, dtype=torch.float32):
    def check(r):
        assert isinstance(r, torch.Tensor), f"expected a tensor, got {type(r).__name__}"
        assert tuple(r.shape) == tuple(shape) and r.dtype == dtype, f"got {tuple(r.shape)} {r.dtype}"

    return Gives(check, f"an empty {dtype} tensor of shape {tuple(shape)}")


def zeros(shape):
    def check(r):
        assert tuple(r.shape) == tuple(shape), f"shape {tuple(r.shape)}, expected {tuple(shape)}"
        assert bool((r == 0).all()), f"not all zero: {r.flatten()[:8].tolist()}"

    return Gives(check, f"zeros of shape {tuple(shape)}")


def satisfies(predicate, what):
    def check(r):
        assert predicate(r), f"result {_summary(r)} is not {what}"

    return Gives(check, what)


def _summary(value):
    if isinstance(value, torch.Tensor):
        if value.device.type == "meta" or value.numel() == 0:
            return f"Tensor{list(value.shape)} {value.dtype} on {value.device}"
        return f"Tensor{list(value.shape)} {value.dtype} on {value.device}: {value.flatten()[:8].tolist()}"
    if isinstance(value, (list, tuple)):
        return type(value).__name__ + "[" + ", ".join(_summary(v) for v in value[:3]) + "]"
    return repr(value)[:200]


def _nan_rows(rows):
    """Rows ``rows`` of a 2-D result are all NaN, the others contain no NaN."""

    def predicate(r):
        return all(bool(r[i].isnan().all()) == (i in rows) and (i in rows or not bool(r[i].isnan().any()))
                   for i in range(r.shape[0]))

    return satisfies(predicate, f"NaN in rows {rows} and nowhere else")


def _nan_rows_in_columns(row, columns):
    """Row ``row`` of a 2-D result is NaN exactly in ``columns``; every other value is a number."""

    def predicate(r):
        nan = r.isnan()
        return nan[row].nonzero().flatten().tolist() == list(columns) and int(nan.sum()) == len(columns)

    return satisfies(predicate, f"NaN in row {row}, columns {list(columns)} only")


# =========================================================================================================
# The table
# =========================================================================================================

CASES = []

# ---------------------------------------------------------------------------------------------------------
# nms
# ---------------------------------------------------------------------------------------------------------
_IDENTICAL = _t([[0, 0, 10, 10], [0, 0, 10, 10]])
_TWO = _t([0.9, 0.8])
CASES += [
    E("nms-boxes-5-cols", lambda: ops.nms(torch.zeros(5, 5), S, 0.5), RuntimeError, r"nms: boxes .*4"),
    E("nms-boxes-1d", lambda: ops.nms(torch.zeros(20), S, 0.5), RuntimeError, r"nms: boxes must be a 2-D"),
    E("nms-boxes-3d", lambda: ops.nms(B[None], S, 0.5), RuntimeError, r"nms: boxes must be a 2-D"),
    E("nms-boxes-0d", lambda: ops.nms(torch.tensor(1.0), S, 0.5), RuntimeError, r"nms: boxes"),
    E("nms-scores-2d", lambda: ops.nms(B, S[:, None], 0.5), RuntimeError, r"nms: scores must be a 1-D"),
    E("nms-scores-0d", lambda: ops.nms(B, torch.tensor(0.5), 0.5), RuntimeError, r"nms: scores must be a 1-D"),
    E("nms-length-mismatch", lambda: ops.nms(B, S[:4], 0.5), RuntimeError, r"boxes and scores must have the same len"),
    E("nms-dtype-mismatch", lambda: ops.nms(B, S.double(), 0.5), RuntimeError,
      r"nms: boxes and scores must have the same dtype"),
    E("nms-dtype-mismatch-half", lambda: ops.nms(B.half(), S, 0.5), RuntimeError,
      r"boxes and scores must have the same dtype"),
    E("nms-int-boxes", lambda: ops.nms(B.long(), S.long(), 0.5), RuntimeError, r"nms: boxes must be a floating"),
    E("nms-int-boxes-float-scores", lambda: ops.nms(B.int(), S, 0.5), RuntimeError, r"boxes must be a floating"),
    E("nms-bool-boxes", lambda: ops.nms(B.bool(), S.bool(), 0.5), RuntimeError, r"boxes must be a floating"),
    E("nms-complex-boxes", lambda: ops.nms(B.to(torch.complex64), S.to(torch.complex64), 0.5), RuntimeError,
      r"nms: boxes must be a floating"),
    E("nms-boxes-not-tensor", lambda: ops.nms(B.tolist(), S, 0.5), TypeError, r"nms: boxes must be a torch.Tensor"),
    E("nms-scores-not-tensor", lambda: ops.nms(B, S.tolist(), 0.5), TypeError, r"nms: scores must be a torch.Tensor"),
    E("nms-threshold-not-number", lambda: ops.nms(B, S, "high"), ValueError, r"high"),
    E("nms-iou_threshold-numeric-str", lambda: ops.nms(B, S, "0.5"), ValueError, r"nms: iou_threshold"),
    E("nms-iou_threshold-str-named", lambda: ops.nms(B, S, "high"), ValueError, r"nms: iou_threshold"),
    E("nms-iou_threshold-none", lambda: ops.nms(B, S, None), TypeError, r"nms: iou_threshold"),
    E("nms-iou_threshold-list", lambda: ops.nms(B, S, [0.5]), TypeError, r"nms: iou_threshold"),
    R("nms-iou_threshold-bool", lambda: ops.nms(_IDENTICAL, _TWO, True),
      same_as(lambda: ops.nms(_IDENTICAL, _TWO, 1.0))),
    R("nms-iou_threshold-nan", lambda: ops.nms(_IDENTICAL, _TWO, NAN), equals([0, 1], torch.int64)),
    R("nms-iou_threshold-negative", lambda: ops.nms(_t([[0, 0, 1, 1], [5, 5, 6, 6], [8, 8, 9, 9]]), S[:3], -0.5),
      equals([2], torch.int64)),
    E("nms-scores-on-meta", lambda: ops.nms(B, S.to(META), 0.5), ValueError,
      r"boxes and scores must be on the same dev"),
    E("nms-boxes-on-meta", lambda: ops.nms(B.to(META), S, 0.5), ValueError,
      r"boxes and scores must be on the same dev"),
    R("nms-empty", lambda: ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5), empty((0,), torch.int64)),
    R("nms-boxes-noncontiguous", lambda: ops.nms(_transposed(_IDENTICAL), _TWO, 0.5),
      same_as_contiguous(lambda: ops.nms(_IDENTICAL, _TWO, 0.5))),
    R("nms-boxes-strided", lambda: ops.nms(_strided(B), S, 0.5), same_as_contiguous(lambda: ops.nms(B, S, 0.5))),
    R("nms-scores-strided", lambda: ops.nms(B, _strided(S), 0.5), same_as_contiguous(lambda: ops.nms(B, S, 0.5))),
    # a NaN coordinate never suppresses and is never suppressed: box 1 survives, box 2 (a copy of box 0) goes
    R("nms-nan-box", lambda: ops.nms(_t([[0, 0, 10, 10], [0, 0, NAN, 10], [0, 0, 10, 10]]), S[[4, 3, 2]], 0.5),
      equals([0, 1], torch.int64)),
    # NaN scores rank first (as torch.sort), and then suppress like any score
    R("nms-nan-score-ranks-first",
      lambda: ops.nms(_t([[0, 0, 1, 1], [5, 5, 6, 6], [8, 8, 9, 9]]), _t([0.5, NAN, 0.9]), 0.5),
      equals([1, 2, 0], torch.int64)),
    R("nms-nan-score-suppresses", lambda: ops.nms(_IDENTICAL, _t([0.9, NAN]), 0.5), equals([1], torch.int64)),
    R("nms-inf-box", lambda: ops.nms(_t([[0, 0, INF, 10], [0, 0, 10, 10]]), _TWO, 0.5), equals([0, 1], torch.int64)),
    R("nms-inverted-boxes", lambda: ops.nms(_t([[10, 10, 0, 0], [10, 10, 0, 0]]), _TWO, 0.5),
      equals([0, 1], torch.int64)),
    E("nms-boxes-over-2^31", lambda: ops.nms(_expanded(2**31), torch.zeros(1).expand(2**31), 0.5), RuntimeError,
      r"nms: at most 2\^31 - 1 boxes are supported, got 2147483648"),
    # raw op: the same checks live in the kernel
    E("raw-nms-boxes-5-cols", lambda: RAW.nms(torch.zeros(5, 5), S, 0.5), RuntimeError, r"nms: boxes .*4"),
    E("raw-nms-boxes-1d", lambda: RAW.nms(torch.zeros(20), S, 0.5), RuntimeError, r"nms: boxes must be a 2-D"),
    E("raw-nms-scores-2d", lambda: RAW.nms(B, S[:, None], 0.5), RuntimeError, r"scores must be a 1-D"),
    E("raw-nms-length-mismatch", lambda: RAW.nms(B, S[:3], 0.5), RuntimeError, r"same length"),
    E("raw-nms-dtype-mismatch", lambda: RAW.nms(B, S.double(), 0.5), RuntimeError, r"same dtype"),
    E("raw-nms-int-boxes", lambda: RAW.nms(B.long(), S.long(), 0.5), RuntimeError, r"boxes must be a floating"),
    E("raw-nms-scores-on-meta", lambda: RAW.nms(B, S.to(META), 0.5), RuntimeError,
      r"nms: boxes and scores must be on the same device"),
]

# ---------------------------------------------------------------------------------------------------------
# batched_nms
# ---------------------------------------------------------------------------------------------------------
CASES += [
    E("bnms-boxes-5-cols", lambda: ops.batched_nms(torch.zeros(5, 5), S, I, 0.5), RuntimeError, r"batched_nms: boxes"),
    E("bnms-boxes-1d", lambda: ops.batched_nms(torch.zeros(20), S, I, 0.5), RuntimeError, r"batched_nms: boxes"),
    E("bnms-scores-2d", lambda: ops.batched_nms(B, S[None], I, 0.5), RuntimeError, r"batched_nms: scores"),
    E("bnms-length-mismatch", lambda: ops.batched_nms(B, S[:4], I, 0.5), RuntimeError, r"same length"),
    E("bnms-dtype-mismatch", lambda: ops.batched_nms(B, S.double(), I, 0.5), RuntimeError, r"same dtype"),
    E("bnms-int-boxes", lambda: ops.batched_nms(B.long(), S.long(), I, 0.5), RuntimeError, r"boxes must be a floating"),
    E("bnms-complex-boxes", lambda: ops.batched_nms(B.to(torch.complex64), S.to(torch.complex64), I, 0.5),
      RuntimeError, r"batched_nms: boxes must be a floating"),
    E("bnms-float-idxs", lambda: ops.batched_nms(B, S, I.float(), 0.5), RuntimeError,
      r"batched_nms: idxs must be an int"),
    E("bnms-bool-idxs", lambda: ops.batched_nms(B, S, I.bool(), 0.5), RuntimeError, r"idxs must be an integer"),
    E("bnms-complex-idxs", lambda: ops.batched_nms(B, S, I.to(torch.complex64), 0.5), RuntimeError,
      r"batched_nms: idxs must be an integer"),
    R("bnms-uint8-idxs", lambda: ops.batched_nms(B, S, _t([0, 255, 0, 255, 1], torch.uint8), 0.5),
      same_as(lambda: ops.batched_nms(B, S, _t([0, 255, 0, 255, 1], torch.int64), 0.5))),
    E("bnms-idxs-short", lambda: ops.batched_nms(B, S, I[:4], 0.5), RuntimeError, r"batched_nms: idxs must be a 1-D"),
    E("bnms-idxs-long", lambda: ops.batched_nms(B, S, _idxs(6), 0.5), RuntimeError, r"idxs must be a 1-D"),
    E("bnms-idxs-2d", lambda: ops.batched_nms(B, S, I[:, None], 0.5), RuntimeError, r"idxs must be a 1-D"),
    E("bnms-idxs-not-tensor", lambda: ops.batched_nms(B, S, I.tolist(), 0.5), TypeError,
      r"idxs must be a torch.Tensor"),
    E("bnms-idxs-on-meta", lambda: ops.batched_nms(B, S, I.to(META), 0.5), ValueError,
      r"boxes and idxs must be on the same device"),
    E("bnms-scores-on-meta", lambda: ops.batched_nms(B, S.to(META), I, 0.5), ValueError,
      r"boxes and scores must be on the same device"),
    E("bnms-iou_threshold-none", lambda: ops.batched_nms(B, S, I, None), TypeError, r"batched_nms: iou_threshold"),
    E("bnms-iou_threshold-str", lambda: ops.batched_nms(B, S, I, "x"), ValueError, r"batched_nms: iou_threshold"),
    R("bnms-empty", lambda: ops.batched_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5),
      empty((0,), torch.int64)),
    R("bnms-noncontiguous", lambda: ops.batched_nms(_transposed(B), _strided(S), _strided(I), 0.5),
      same_as_contiguous(lambda: ops.batched_nms(B, S, I, 0.5))),
    R("bnms-nan-box", lambda: ops.batched_nms(_t([[0, 0, 10, 10], [0, 0, NAN, 10], [0, 0, 10, 10]]), S[[4, 3, 2]],
                                              torch.zeros(3, dtype=torch.int64), 0.5),
      equals([0, 1], torch.int64)),
    R("bnms-inverted-boxes", lambda: ops.batched_nms(_t([[10, 10, 0, 0], [10, 10, 0, 0]]), _TWO,
                                                     torch.zeros(2, dtype=torch.int64), 0.5),
      equals([0, 1], torch.int64)),
    E("bnms-boxes-over-2^31", lambda: ops.batched_nms(_expanded(2**31), torch.zeros(1).expand(2**31),
                                                      torch.zeros(1, dtype=torch.int64).expand(2**31), 0.5),
      RuntimeError, r"batched_nms: at most 2\^31 - 1 boxes are supported"),
    E("raw-bnms-float-idxs", lambda: RAW.batched_nms(B, S, I.float(), 0.5), RuntimeError, r"idxs must be an integer"),
    E("raw-bnms-idxs-short", lambda: RAW.batched_nms(B, S, I[:2], 0.5), RuntimeError, r"idxs must be a 1-D"),
    E("raw-bnms-idxs-on-meta", lambda: RAW.batched_nms(B, S, I.to(META), 0.5), RuntimeError,
      r"batched_nms: boxes and idxs must be on the same device"),
]

# ---------------------------------------------------------------------------------------------------------
# nms_fixed, batched_nms_fixed: nms's rules, plus max_output
# ---------------------------------------------------------------------------------------------------------


def fixed_of(reference, max_output):
    """(keep, count): keep[:count] is reference()[:max_output], then -1 up to max_output."""

    def check(r):
        keep, count = r
        kept = reference()[:max_output]
        assert keep.dtype == torch.int64 and keep.shape == (max_output,), (keep.dtype, keep.shape)
        assert count.dtype == torch.int64 and count.dim() == 0 and int(count) == kept.numel(), count
        assert torch.equal(keep[: kept.numel()], kept) and bool((keep[kept.numel():] == -1).all()), keep

    return Gives(check, f"keep / count of the first {max_output} indices of the reference call")


def _fixed_rows(name, call, raw, reference, cat):
    """Rows of nms_fixed (cat=()) or batched_nms_fixed (cat=(idxs,))."""
    return [
        E(f"{name}-boxes-5-cols", lambda: call(torch.zeros(5, 5), S, *cat, 0.5, 3), RuntimeError, rf"{name}: boxes"),
        E(f"{name}-scores-2d", lambda: call(B, S[:, None], *cat, 0.5, 3), RuntimeError, rf"{name}: scores must be a 1-D"),
        E(f"{name}-dtype-mismatch", lambda: call(B, S.double(), *cat, 0.5, 3), RuntimeError, r"same dtype"),
        E(f"{name}-int-boxes", lambda: call(B.long(), S.long(), *cat, 0.5, 3), RuntimeError, r"boxes must be a floating"),
        E(f"{name}-boxes-not-tensor", lambda: call(B.tolist(), S, *cat, 0.5, 3), TypeError, rf"{name}: boxes must be a"),
        E(f"{name}-scores-on-meta", lambda: call(B, S.to(META), *cat, 0.5, 3), ValueError,
          r"boxes and scores must be on the same device"),
        E(f"{name}-iou_threshold-str", lambda: call(B, S, *cat, "x", 3), ValueError, rf"{name}: iou_threshold"),
        E(f"{name}-max_output-negative", lambda: call(B, S, *cat, 0.5, -1), ValueError,
          rf"{name}: max_output must be in \[0, 2\^31 - 1\]"),
        E(f"{name}-max_output-2^31", lambda: call(B, S, *cat, 0.5, 2**31), ValueError, rf"{name}: max_output"),
        E(f"{name}-max_output-float", lambda: call(B, S, *cat, 0.5, 3.0), TypeError, rf"{name}: max_output must be an int"),
        E(f"{name}-max_output-str", lambda: call(B, S, *cat, 0.5, "3"), ValueError, rf"{name}: max_output"),
        E(f"{name}-max_output-none", lambda: call(B, S, *cat, 0.5, None), TypeError, rf"{name}: max_output"),
        E(f"raw-{name}-max_output-negative", lambda: raw(B, S, *cat, 0.5, -1), RuntimeError,
          rf"{name}: max_output must be in"),
        E(f"raw-{name}-scores-on-meta", lambda: raw(B, S.to(META), *cat, 0.5, 3), RuntimeError,
          rf"{name}: boxes and scores must be on the same device"),
        R(f"{name}-empty", lambda: call(torch.zeros(0, 4), torch.zeros(0), *(c[:0] for c in cat), 0.5, 4),
          fixed_of(lambda: torch.zeros(0, dtype=torch.int64), 4)),
        R(f"{name}-max_output-0", lambda: call(B, S, *cat, 0.5, 0), fixed_of(lambda: reference(B, S, *cat, 0.5), 0)),
        R(f"{name}-max_output-above-kept", lambda: call(B, S, *cat, 0.5, 9),
          fixed_of(lambda: reference(B, S, *cat, 0.5), 9)),
        R(f"{name}-max_output-bool", lambda: call(B, S, *cat, 0.5, True),
          fixed_of(lambda: reference(B, S, *cat, 0.5), 1)),
        R(f"{name}-noncontiguous", lambda: call(_transposed(B), _strided(S), *(_strided(c) for c in cat), 0.5, 3),
          fixed_of(lambda: reference(B, S, *cat, 0.5), 3)),
        R(f"{name}-nan-box", lambda: call(_t([[0, 0, 10, 10], [0, 0, NAN, 10], [0, 0, 10, 10]]), S[[4, 3, 2]],
                                          *(torch.zeros(3, dtype=torch.int64) for _ in cat), 0.5, 3),
          fixed_of(lambda: torch.tensor([0, 1]), 3)),
        R(f"{name}-nan-threshold", lambda: call(_IDENTICAL, _TWO, *(c[:2] for c in cat), NAN, 2),
          fixed_of(lambda: torch.tensor([0, 1]), 2)),
    ]


CASES += _fixed_rows("nms_fixed", ops.nms_fixed, RAW.nms_fixed, ops.nms, ())
CASES += _fixed_rows("batched_nms_fixed", ops.batched_nms_fixed, RAW.batched_nms_fixed, ops.batched_nms, (I,))
CASES += [
    E("batched_nms_fixed-float-idxs", lambda: ops.batched_nms_fixed(B, S, I.float(), 0.5, 3), RuntimeError,
      r"batched_nms_fixed: idxs must be an integer"),
    E("batched_nms_fixed-idxs-short", lambda: ops.batched_nms_fixed(B, S, I[:4], 0.5, 3), RuntimeError,
      r"batched_nms_fixed: idxs must be a 1-D"),
    E("batched_nms_fixed-idxs-on-meta", lambda: ops.batched_nms_fixed(B, S, I.to(META), 0.5, 3), ValueError,
      r"boxes and idxs must be on the same device"),
]

# ---------------------------------------------------------------------------------------------------------
# Pairwise overlap family: box_iou, generalized_box_iou, distance_box_iou, complete_box_iou
# ---------------------------------------------------------------------------------------------------------
OVERLAP = [
    ("box_iou", ops.box_iou, RAW.box_iou, ()),
    ("generalized_box_iou", ops.generalized_box_iou, RAW.generalized_box_iou, ()),
    ("distance_box_iou", ops.distance_box_iou, RAW.distance_box_iou, (1e-7,)),
    ("complete_box_iou", ops.complete_box_iou, RAW.complete_box_iou, (1e-7,)),
]
_INVERTED = _t([[6, 7, 1, 2], [0, 0, 10, 10], [10, 0, 0, 10]])

for name, fn, raw, extra in OVERLAP:
    tv_name = name
    CASES += [
        E(f"{name}-boxes1-3-cols", lambda fn=fn: fn(torch.zeros(5, 3), B), RuntimeError, rf"{name}: boxes1 .*4"),
        E(f"{name}-boxes2-3-cols", lambda fn=fn: fn(B, torch.zeros(5, 3)), RuntimeError, rf"{name}: boxes2 .*4"),
        E(f"{name}-boxes1-5-cols", lambda fn=fn: fn(torch.zeros(2, 3, 5), B), RuntimeError, rf"{name}: boxes1"),
        E(f"{name}-boxes1-1d", lambda fn=fn: fn(torch.zeros(4), B), RuntimeError, rf"{name}: boxes1 must have shape"),
        E(f"{name}-boxes2-1d", lambda fn=fn: fn(B, torch.zeros(4)), RuntimeError, rf"{name}: boxes2 must have shape"),
        E(f"{name}-no-broadcast", lambda fn=fn: fn(torch.zeros(2, 3, 4), torch.zeros(4, 3, 4)), RuntimeError,
          rf"{name}: the leading dimensions of boxes1 .* and boxes2 .* do not broadcast"),
        E(f"{name}-bool-boxes1", lambda fn=fn: fn(B.bool(), B), ValueError, rf"{name}: boxes1 must be a real"),
        E(f"{name}-bool-boxes2", lambda fn=fn: fn(B, B.bool()), ValueError, rf"{name}: boxes2 must be a real"),
        E(f"{name}-complex", lambda fn=fn: fn(B.to(torch.complex64), B), ValueError, rf"{name}: boxes1 must be a real"),
        E(f"{name}-boxes1-list", lambda fn=fn: fn(B.tolist(), B), TypeError, rf"{name}: boxes1 must be a torch.Tensor"),
        E(f"{name}-boxes2-none", lambda fn=fn: fn(B, None), TypeError, rf"{name}: boxes2 must be a torch.Tensor"),
        E(f"{name}-boxes2-on-meta", lambda fn=fn: fn(B, B.to(META)), ValueError,
          rf"{name}: boxes1 and boxes2 must be on the same device"),
        # integer boxes are accepted: float32 result, computed exactly in float64 then rounded once
        R(f"{name}-int8-boxes", lambda fn=fn: fn(B.to(torch.int8), B.to(torch.uint8)),
          same_as(lambda fn=fn: fn(B.double(), B.double()).float())),
        R(f"{name}-mixed-float32-float64", lambda fn=fn: fn(B, B.double()),
          same_as(lambda fn=fn: fn(B.double(), B.double()))),
        R(f"{name}-mixed-float16-float32", lambda fn=fn: fn(B.half(), B), same_as(lambda fn=fn: fn(B, B))),
        R(f"{name}-empty-boxes1", lambda fn=fn: fn(torch.zeros(0, 4), B), empty((0, 5))),
        R(f"{name}-empty-boxes2", lambda fn=fn: fn(B, torch.zeros(0, 4)), empty((5, 0))),
        R(f"{name}-empty-batch", lambda fn=fn: fn(torch.zeros(0, 3, 4), torch.zeros(1, 2, 4)), empty((0, 3, 2))),
        R(f"{name}-noncontiguous", lambda fn=fn: fn(_transposed(B), _strided(B[:3])),
          same_as_contiguous(lambda fn=fn: fn(B, B[:3]))),
        # a NaN coordinate makes that box's row (here: row 1) NaN, nothing else
        R(f"{name}-nan-coordinate", lambda fn=fn: fn(_t([[0, 0, 10, 10], [0, NAN, 10, 10], [2, 2, 5, 5]]), B),
          _nan_rows([1])),
        # inverted boxes follow torchvision's formulas (negative area), on every code path
        R(f"{name}-inverted-boxes", lambda fn=fn: fn(_INVERTED, B),
          same_as_torchvision(lambda n=tv_name: getattr(_tv(), n)(_INVERTED, B), exact=(name != "complete_box_iou"))),
        R(f"{name}-inverted-boxes-autograd-path", lambda fn=fn: fn(_INVERTED.clone().requires_grad_(), B).detach(),
          same_as(lambda fn=fn: fn(_INVERTED, B), exact=False, what="the kernel's result")),
        # more than 2^31 boxes: the result (N x 0) needs no memory
        R(f"{name}-boxes1-over-2^31", lambda fn=fn: fn(_expanded(HUGE), torch.zeros(0, 4)), empty((HUGE, 0))),
        R(f"{name}-boxes2-over-2^31", lambda fn=fn: fn(torch.zeros(0, 4), _expanded(HUGE)), empty((0, HUGE))),
        E(f"raw-{name}-int-boxes", lambda raw=raw, extra=extra: raw(B.long(), B.long(), *extra), RuntimeError,
          rf"{name}: boxes1 must be a floating"),
        E(f"raw-{name}-3-cols", lambda raw=raw, extra=extra: raw(B, torch.zeros(2, 3), *extra), RuntimeError,
          rf"{name}: boxes2 .*4"),
        E(f"raw-{name}-no-broadcast",
          lambda raw=raw, extra=extra: raw(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4), *extra),
          RuntimeError, r"do not broadcast"),
        E(f"raw-{name}-boxes2-on-meta", lambda raw=raw, extra=extra: raw(B, B.to(META), *extra), RuntimeError,
          rf"{name}: boxes1 and boxes2 must be on the same device"),
    ]

for name, fn in (("distance_box_iou", ops.distance_box_iou), ("complete_box_iou", ops.complete_box_iou)):
    CASES += [
        E(f"{name}-eps-str", lambda fn=fn: fn(B, B, "small"), ValueError, rf"{name}: eps"),
        E(f"{name}-eps-none", lambda fn=fn: fn(B, B, None), TypeError, rf"{name}: eps"),
        R(f"{name}-eps-bool", lambda fn=fn: fn(B, B, True), same_as(lambda fn=fn: fn(B, B, 1.0))),
    ]

CASES += [
    R("box_iou-inf-coordinate", lambda: ops.box_iou(_t([[0, 0, INF, 10]]), _t([[0, 0, 10, 10]])), equals([[0.0]])),
    E("box_iou-fmt-bogus", lambda: ops.box_iou(B, B, fmt="bogus"), ValueError, r"box_iou: unsupported format 'bogus'"),
    E("box_iou-fmt-none", lambda: ops.box_iou(B, B, fmt=None), ValueError, r"box_iou: unsupported format 'None'"),
    E("box_iou-fmt-cxcywhr", lambda: ops.box_iou(B, B, fmt="cxcywhr"), NotImplementedError, r"cxcywhr"),
    E("box_iou-fmt-xywhr", lambda: ops.box_iou(B, B, fmt="xywhr"), NotImplementedError, r"xywhr"),
    E("box_iou-fmt-xyxyxyxy", lambda: ops.box_iou(B, B, fmt="xyxyxyxy"), NotImplementedError, r"xyxyxyxy"),
]

# ---------------------------------------------------------------------------------------------------------
# box_area, box_convert, clip_boxes_to_image, remove_small_boxes (PyTorch, elementwise)
# Absent: inputs of more than 2^31 boxes. Each result has one value per box, so it would need gigabytes.
# ---------------------------------------------------------------------------------------------------------
CASES += [
    E("box_area-fmt-bogus", lambda: ops.box_area(B, fmt="bogus"), ValueError, r"box_area: unsupported format 'bogus'"),
    E("box_area-boxes-5-cols", lambda: ops.box_area(torch.zeros(5, 5)), SHAPE_ERRORS, r"box_area: boxes"),
    E("box_area-boxes-3-cols", lambda: ops.box_area(torch.zeros(5, 3)), SHAPE_ERRORS, r"box_area: boxes"),
    E("box_area-boxes-0d", lambda: ops.box_area(torch.tensor(1.0)), SHAPE_ERRORS, r"box_area: boxes"),
    R("box_area-boxes-1d", lambda: ops.box_area(_t([1, 2, 4, 7])), equals(15.0)),  # Tensor[..., 4] with ... = ()
    E("box_area-bool", lambda: ops.box_area(B.bool()), ValueError, r"box_area: boxes must be a real"),
    E("box_area-complex", lambda: ops.box_area(B.to(torch.complex64)), ValueError, r"box_area: boxes must be a real"),
    R("box_area-int8", lambda: ops.box_area(B.to(torch.int8)), same_as(lambda: ops.box_area(B).to(torch.int32))),
    E("box_area-list", lambda: ops.box_area(B.tolist()), TypeError, r"box_area: boxes must be a torch.Tensor"),
    R("box_area-empty", lambda: ops.box_area(torch.zeros(0, 4)), empty((0,))),
    R("box_area-noncontiguous", lambda: ops.box_area(_strided(B)), same_as_contiguous(lambda: ops.box_area(B))),
    R("box_area-nan", lambda: ops.box_area(_t([[0, 0, NAN, 1], [0, 0, 2, 2]])), equals([NAN, 4.0])),
    R("box_area-inverted", lambda: ops.box_area(_t([[10, 0, 0, 1], [0, 5, 2, 0]])), equals([-10.0, -10.0])),
    E("box_convert-in-bogus", lambda: ops.box_convert(B, "bogus", "xyxy"), ValueError, r"in_fmt bogus"),
    E("box_convert-out-bogus", lambda: ops.box_convert(B, "xyxy", "bogus"), ValueError, r"out_fmt bogus"),
    E("box_convert-in-none", lambda: ops.box_convert(B, None, "xyxy"), ValueError, r"in_fmt None"),
    E("box_convert-rotated", lambda: ops.box_convert(B, "cxcywhr", "xyxy"), NotImplementedError, r"cxcywhr"),
    E("box_convert-rotated-out", lambda: ops.box_convert(B, "xyxy", "xywhr"), NotImplementedError, r"xywhr"),
    E("box_convert-boxes-5-cols", lambda: ops.box_convert(torch.zeros(5, 5), "xyxy", "cxcywh"), SHAPE_ERRORS,
      r"box_convert: boxes"),
    E("box_convert-boxes-3-cols", lambda: ops.box_convert(torch.zeros(5, 3), "xyxy", "cxcywh"), SHAPE_ERRORS,
      r"box_convert: boxes"),
    E("box_convert-boxes-5-cols-same-format", lambda: ops.box_convert(torch.zeros(5, 5), "xyxy", "xyxy"), SHAPE_ERRORS,
      r"box_convert: boxes"),
    E("box_convert-bool", lambda: ops.box_convert(B.bool(), "xyxy", "cxcywh"), ValueError, r"box_convert: boxes"),
    E("box_convert-complex", lambda: ops.box_convert(B.to(torch.complex64), "xyxy", "cxcywh"), ValueError,
      r"box_convert: boxes"),
    E("box_convert-list", lambda: ops.box_convert(B.tolist(), "xyxy", "cxcywh"), TypeError,
      r"box_convert: boxes must be a torch.Tensor"),
    R("box_convert-empty", lambda: ops.box_convert(torch.zeros(0, 4), "xyxy", "cxcywh"), empty((0, 4))),
    R("box_convert-noncontiguous", lambda: ops.box_convert(_transposed(B), "xyxy", "cxcywh"),
      same_as_contiguous(lambda: ops.box_convert(B, "xyxy", "cxcywh"))),
    R("box_convert-nan", lambda: ops.box_convert(_t([[0, 0, NAN, 1]]), "xyxy", "cxcywh"),
      equals([[NAN, 0.5, NAN, 1.0]])),
    R("box_convert-inverted", lambda: ops.box_convert(_t([[10, 0, 0, 1]]), "xyxy", "xywh"),
      equals([[10.0, 0, -10, 1]])),
    E("clip_boxes_to_image-boxes-5-cols", lambda: ops.clip_boxes_to_image(torch.zeros(5, 5), (10, 10)), SHAPE_ERRORS,
      r"clip_boxes_to_image: boxes"),
    E("clip_boxes_to_image-boxes-3-cols", lambda: ops.clip_boxes_to_image(torch.zeros(5, 3), (10, 10)), SHAPE_ERRORS,
      r"clip_boxes_to_image: boxes"),
    E("clip_boxes_to_image-bool", lambda: ops.clip_boxes_to_image(B.bool(), (5, 5)), ValueError,
      r"clip_boxes_to_image: boxes"),
    E("clip_boxes_to_image-list", lambda: ops.clip_boxes_to_image(B.tolist(), (5, 5)), TypeError,
      r"clip_boxes_to_image: boxes must be a torch.Tensor"),
    R("clip_boxes_to_image-int-boxes", lambda: ops.clip_boxes_to_image(B.long(), (5, 5)),
      same_as(lambda: ops.clip_boxes_to_image(B, (5, 5)).long())),
    R("clip_boxes_to_image-empty", lambda: ops.clip_boxes_to_image(torch.zeros(0, 4), (5, 5)), empty((0, 4))),
    R("clip_boxes_to_image-noncontiguous", lambda: ops.clip_boxes_to_image(_transposed(B), (5, 6)),
      same_as_contiguous(lambda: ops.clip_boxes_to_image(B, (5, 6)))),
    R("clip_boxes_to_image-nan-inf", lambda: ops.clip_boxes_to_image(_t([[NAN, -INF, INF, 5]]), (4, 3)),
      equals([[NAN, 0.0, 3.0, 4.0]])),
    R("clip_boxes_to_image-inverted", lambda: ops.clip_boxes_to_image(_t([[10, 10, 0, 0]]), (5, 6)),
      equals([[6.0, 5.0, 0.0, 0.0]])),
    R("clip_boxes_to_image-size-zero", lambda: ops.clip_boxes_to_image(B, (0, 0)), zeros((5, 4))),
    R("clip_boxes_to_image-size-float", lambda: ops.clip_boxes_to_image(B, (5.5, 6.5)),
      equals([[0, 1, 3, 4], [2, 3, 5, 5.5], [4, 5, 6.5, 5.5], [6, 5.5, 6.5, 5.5], [6.5, 5.5, 6.5, 5.5]])),
    E("clip_boxes_to_image-size-negative", lambda: ops.clip_boxes_to_image(B, (-1, 10)), ValueError,
      r"clip_boxes_to_image: size"),
    E("clip_boxes_to_image-size-nan", lambda: ops.clip_boxes_to_image(B, (NAN, 10)), ValueError,
      r"clip_boxes_to_image: size"),
    E("clip_boxes_to_image-size-none", lambda: ops.clip_boxes_to_image(B, None), TypeError,
      r"clip_boxes_to_image: size"),
    E("clip_boxes_to_image-size-int", lambda: ops.clip_boxes_to_image(B, 10), TypeError,
      r"clip_boxes_to_image: size"),
    E("clip_boxes_to_image-size-3-values", lambda: ops.clip_boxes_to_image(B, (1, 2, 3)), ValueError,
      r"clip_boxes_to_image: size"),
    E("clip_boxes_to_image-size-str", lambda: ops.clip_boxes_to_image(B, "ab"), (TypeError, ValueError),
      r"clip_boxes_to_image: size"),
    E("remove_small_boxes-boxes-5-cols", lambda: ops.remove_small_boxes(torch.zeros(5, 5), 1.0), SHAPE_ERRORS,
      r"remove_small_boxes: boxes"),
    E("remove_small_boxes-boxes-3-cols", lambda: ops.remove_small_boxes(torch.zeros(5, 3), 1.0), SHAPE_ERRORS,
      r"remove_small_boxes: boxes"),
    E("remove_small_boxes-boxes-3d", lambda: ops.remove_small_boxes(torch.ones(2, 3, 4), 0.0), SHAPE_ERRORS,
      r"remove_small_boxes: boxes"),
    E("remove_small_boxes-bool", lambda: ops.remove_small_boxes(B.bool(), 0.5), ValueError,
      r"remove_small_boxes: boxes"),
    E("remove_small_boxes-complex", lambda: ops.remove_small_boxes(B.to(torch.complex64), 0.5), ValueError,
      r"remove_small_boxes: boxes"),
    E("remove_small_boxes-list", lambda: ops.remove_small_boxes(B.tolist(), 0.5), TypeError,
      r"remove_small_boxes: boxes must be a torch.Tensor"),
    E("remove_small_boxes-min_size-none", lambda: ops.remove_small_boxes(B, None), TypeError,
      r"remove_small_boxes: min_size"),
    E("remove_small_boxes-min_size-str", lambda: ops.remove_small_boxes(B, "1"), ValueError,
      r"remove_small_boxes: min_size"),
    R("remove_small_boxes-min_size-bool", lambda: ops.remove_small_boxes(B, True),
      same_as(lambda: ops.remove_small_boxes(B, 1.0))),
    R("remove_small_boxes-min_size-nan", lambda: ops.remove_small_boxes(B, NAN), empty((0,), torch.int64)),
    R("remove_small_boxes-min_size-negative",
      lambda: ops.remove_small_boxes(_t([[0, 0, 0, 0], [1, 1, 0.5, 0.5]]), -1.0),
      equals([0, 1], torch.int64)),
    R("remove_small_boxes-empty", lambda: ops.remove_small_boxes(torch.zeros(0, 4), 0.5), empty((0,), torch.int64)),
    R("remove_small_boxes-noncontiguous", lambda: ops.remove_small_boxes(_transposed(B), 3.0),
      same_as_contiguous(lambda: ops.remove_small_boxes(B, 3.0))),
    R("remove_small_boxes-nan", lambda: ops.remove_small_boxes(_t([[0, 0, NAN, 5], [0, 0, 5, 5]]), 0.5),
      equals([1], torch.int64)),
    R("remove_small_boxes-inverted", lambda: ops.remove_small_boxes(_t([[5, 5, 0, 0], [0, 0, 5, 5]]), 0.5),
      equals([1], torch.int64)),
]

# ---------------------------------------------------------------------------------------------------------
# roi_align / RoIAlign and roi_pool / RoIPool
# Absent: inputs of more than 2^31 elements. An expanded (zero-stride) map is copied into a contiguous map
# first (8.6 GB for 2^31 float32 elements), and more than 2^31 RoIs give a result at least that large; real
# maps above 2^31 elements are covered by tests/test_huge_inputs.py. An output_size beyond 2^31 per side
# is refused before anything is allocated (tried with no RoIs).
# ---------------------------------------------------------------------------------------------------------


def _align(*args, **kwargs):
    return ops.roi_align(X, ROI, 2, *args, **kwargs)


def _pool(*args, **kwargs):
    return ops.roi_pool(X, ROI, 2, *args, **kwargs)


for name, fn, module in (("roi_align", ops.roi_align, lambda: ops.RoIAlign(2, 1.0, 2)),
                         ("roi_pool", ops.roi_pool, lambda: ops.RoIPool(2, 1.0))):
    CASES += [
        E(f"{name}-rois-4-cols", lambda fn=fn: fn(X, torch.zeros(1, 4), 2), RuntimeError,
          rf"{name}: rois must be a tensor of shape \[K, 5\]"),
        E(f"{name}-rois-1d", lambda fn=fn: fn(X, torch.zeros(5), 2), RuntimeError,
          rf"{name}: rois must be a tensor of shape"),
        E(f"{name}-rois-3d", lambda fn=fn: fn(X, ROI[None], 2), RuntimeError,
          rf"{name}: rois must be a tensor of shape"),
        E(f"{name}-input-3d", lambda fn=fn: fn(X[0], ROI, 2), RuntimeError, rf"{name}: input must be a 4-D tensor"),
        E(f"{name}-input-5d", lambda fn=fn: fn(X[None], ROI, 2), RuntimeError, rf"{name}: input must be a 4-D tensor"),
        E(f"{name}-input-int", lambda fn=fn: fn(X.long(), ROI, 2), RuntimeError, rf"{name}: input must be float16"),
        E(f"{name}-input-bool", lambda fn=fn: fn(X.bool(), ROI, 2), RuntimeError, rf"{name}: input must be float16"),
        E(f"{name}-input-complex", lambda fn=fn: fn(X.to(torch.complex64), ROI, 2), RuntimeError,
          rf"{name}: input must be float16"),
        E(f"{name}-rois-int", lambda fn=fn: fn(X, ROI.long(), 2), RuntimeError, rf"{name}: rois must be a floating"),
        E(f"{name}-rois-bool", lambda fn=fn: fn(X, ROI.bool(), 2), RuntimeError, rf"{name}: rois must be a floating"),
        E(f"{name}-rois-complex", lambda fn=fn: fn(X, ROI.to(torch.complex64), 2), RuntimeError,
          rf"{name}: rois must be a floating"),
        R(f"{name}-rois-float64", lambda fn=fn: fn(X, ROI.double(), 2), same_as(lambda fn=fn: fn(X, ROI, 2))),
        R(f"{name}-input-float64-rois-float32", lambda fn=fn: fn(X.double(), ROI, 2),
          same_as(lambda fn=fn: fn(X.double(), ROI.double(), 2))),
        E(f"{name}-rois-on-meta", lambda fn=fn: fn(X, ROI.to(META), 2), ValueError,
          rf"{name}: input and rois must be on the same device"),
        E(f"{name}-input-on-meta", lambda fn=fn: fn(X.to(META), ROI, 2), ValueError,
          rf"{name}: input and rois must be on the same device"),
        E(f"{name}-boxes-list-on-meta", lambda fn=fn: fn(X, [ROI[:, 1:].to(META)], 2), ValueError,
          rf"{name}: input and rois must be on the same device"),
        E(f"{name}-boxes-list-mixed-devices", lambda fn=fn: fn(_fmap(2), [ROI[:, 1:], ROI[:, 1:].to(META)], 2),
          ValueError,
          rf"{name}: .*same device"),
        R(f"{name}-boxes-list-mixed-dtypes", lambda fn=fn: fn(_fmap(2), [ROI[:, 1:], ROI[:, 1:].double()], 2),
          same_as(lambda fn=fn: fn(_fmap(2), [ROI[:, 1:], ROI[:, 1:]], 2))),
        E(f"{name}-boxes-empty-list", lambda fn=fn: fn(X, [], 2), ValueError, rf"{name}: boxes is an empty list"),
        E(f"{name}-boxes-list-5-cols", lambda fn=fn: fn(X, [torch.zeros(1, 5)], 2), ValueError,
          rf"{name}: boxes\[0\] must be a Tensor\[L, 4\]"),
        E(f"{name}-boxes-list-int", lambda fn=fn: fn(X, [ROI[:, 1:].long()], 2), RuntimeError,
          rf"{name}: rois must be a floating"),
        E(f"{name}-boxes-none", lambda fn=fn: fn(X, None, 2), TypeError,
          rf"{name}: boxes must be a Tensor\[K, 5\] or a list"),
        E(f"{name}-boxes-ndarray", lambda fn=fn: fn(X, ROI.numpy(), 2), TypeError, rf"{name}: boxes must be a Tensor"),
        E(f"{name}-input-list", lambda fn=fn: fn(X.tolist(), ROI, 2), TypeError,
          rf"{name}: input must be a torch.Tensor"),
        # batch index: outside [0, N) is an error; a fraction is truncated toward zero (as torchvision)
        E(f"{name}-batch-index-negative", lambda fn=fn: fn(X, _t([[-1, 0, 0, 4, 4]]), 2), RuntimeError,
          rf"{name}: rois\[0, 0\] = -1 is not a batch index of input, which has 1 image"),
        E(f"{name}-batch-index-N", lambda fn=fn: fn(X, _t([[0, 0, 0, 4, 4], [1, 0, 0, 4, 4]]), 2), RuntimeError,
          rf"{name}: rois\[1, 0\] = 1 is not a batch index"),
        E(f"{name}-batch-index-nan", lambda fn=fn: fn(X, _t([[NAN, 0, 0, 4, 4]]), 2), RuntimeError,
          rf"{name}: rois\[0, 0\] = nan is not a batch index"),
        E(f"{name}-batch-index-inf", lambda fn=fn: fn(X, _t([[INF, 0, 0, 4, 4]]), 2), RuntimeError,
          rf"{name}: rois\[0, 0\] = inf is not a batch index"),
        E(f"{name}-batch-index-no-images", lambda fn=fn: fn(_fmap(0), ROI, 2), RuntimeError,
          rf"{name}: rois\[0, 0\] = 0 is not a batch index of input, which has 0 image"),
        E(f"{name}-boxes-list-more-images-than-input", lambda fn=fn: fn(X, [ROI[:, 1:], ROI[:, 1:]], 2), RuntimeError,
          rf"{name}: rois\[2, 0\] = 1 is not a batch index"),
        R(f"{name}-batch-index-fraction", lambda fn=fn: fn(_fmap(2), _t([[-0.5, 1, 1, 6, 5], [1.99, 1, 1, 6, 5]]), 2),
          same_as(lambda fn=fn: fn(_fmap(2), _t([[0, 1, 1, 6, 5], [1, 1, 1, 6, 5]]), 2))),
        # empty inputs
        R(f"{name}-no-rois", lambda fn=fn: fn(X, torch.zeros(0, 5), (3, 2)), empty((0, 2, 3, 2))),
        R(f"{name}-boxes-list-of-empty", lambda fn=fn: fn(X, [torch.zeros(0, 4)], 2), empty((0, 2, 2, 2))),
        R(f"{name}-no-images-no-rois", lambda fn=fn: fn(_fmap(0), torch.zeros(0, 5), 2), empty((0, 2, 2, 2))),
        R(f"{name}-no-channels", lambda fn=fn: fn(_fmap(1, 0), ROI, 2), empty((2, 0, 2, 2))),
        R(f"{name}-empty-map", lambda fn=fn: fn(_fmap(1, 2, 0, 8), ROI, 2), zeros((2, 2, 2, 2))),
        # sizes
        E(f"{name}-output_size-zero", lambda fn=fn: fn(X, ROI, 0), RuntimeError,
          rf"{name}: output_size must be positive, got \(0, 0\)"),
        E(f"{name}-output_size-negative", lambda fn=fn: fn(X, ROI, (-1, 2)), RuntimeError,
          rf"{name}: output_size must be positive, got \(-1, 2\)"),
        E(f"{name}-output_size-over-2^31", lambda fn=fn: fn(X, ROI[:0], (2**31, 1)), RuntimeError,
          rf"output_size must be at most 2\^31 - 1 per side, got \(2147483648, 1\)"),
        E(f"{name}-output_size-3-values", lambda fn=fn: fn(X, ROI, (2, 2, 2)), ValueError,
          r"output_size must be an int or a pair of ints"),
        E(f"{name}-output_size-none", lambda fn=fn: fn(X, ROI, None), TypeError, rf"{name}: output_size"),
        E(f"{name}-output_size-float", lambda fn=fn: fn(X, ROI, 2.5), TypeError, rf"{name}: output_size"),
        E(f"{name}-output_size-str", lambda fn=fn: fn(X, ROI, "2"), ValueError, rf"{name}: output_size"),
        R(f"{name}-output_size-bool", lambda fn=fn: fn(X, ROI, True), same_as(lambda fn=fn: fn(X, ROI, 1))),
        E(f"{name}-spatial_scale-zero", lambda fn=fn: fn(X, ROI, 2, 0.0), RuntimeError,
          rf"{name}: spatial_scale must be a positive number, got 0"),
        E(f"{name}-spatial_scale-negative", lambda fn=fn: fn(X, ROI, 2, -0.5), RuntimeError,
          rf"{name}: spatial_scale must be a positive number"),
        E(f"{name}-spatial_scale-nan", lambda fn=fn: fn(X, ROI, 2, NAN), RuntimeError,
          rf"{name}: spatial_scale must be a positive number, got nan"),
        E(f"{name}-spatial_scale-inf", lambda fn=fn: fn(X, ROI, 2, INF), RuntimeError,
          rf"{name}: spatial_scale must be a positive number, got inf"),
        E(f"{name}-spatial_scale-none", lambda fn=fn: fn(X, ROI, 2, None), TypeError, rf"{name}: spatial_scale"),
        E(f"{name}-spatial_scale-list", lambda fn=fn: fn(X, ROI, 2, [0.5]), TypeError, rf"{name}: spatial_scale"),
        E(f"{name}-spatial_scale-str", lambda fn=fn: fn(X, ROI, 2, "0.5"), ValueError, rf"{name}: spatial_scale"),
        R(f"{name}-spatial_scale-bool", lambda fn=fn: fn(X, ROI, 2, True), same_as(lambda fn=fn: fn(X, ROI, 2, 1.0))),
        # coordinates
        R(f"{name}-noncontiguous-input", lambda fn=fn: fn(_strided(X), ROI, 2),
          same_as_contiguous(lambda fn=fn: fn(X, ROI, 2))),
        R(f"{name}-channel-sliced-input", lambda fn=fn: fn(_fmap(1, 4)[:, ::2], ROI, 2),
          same_as_contiguous(lambda fn=fn: fn(_fmap(1, 4)[:, ::2].contiguous(), ROI, 2))),
        R(f"{name}-noncontiguous-rois", lambda fn=fn: fn(X, _transposed(ROI), 2),
          same_as_contiguous(lambda fn=fn: fn(X, ROI, 2))),
        R(f"{name}-inverted-roi", lambda fn=fn, name=name: fn(X, _t([[0, 6, 5, 1, 1]]), 2),
          same_as_torchvision(lambda name=name: getattr(_tv(), name)(X, _t([[0, 6, 5, 1, 1]]), 2))),
        R(f"{name}-roi-outside-map", lambda fn=fn: fn(X, _t([[0, 20, 20, 30, 30]]), 2), zeros((1, 2, 2, 2))),
        R(f"{name}-nan-coordinate", lambda fn=fn: fn(X, _t([[0, 1, NAN, 6, 5]]), 2), zeros((1, 2, 2, 2))),
        # the module form: same rules
        E(f"{name}-module-output_size-zero",
          lambda name=name: (ops.RoIAlign(0, 1.0, 2) if name == "roi_align" else ops.RoIPool(0, 1.0))(X, ROI),
          RuntimeError, rf"{name}: output_size must be positive"),
        E(f"{name}-module-rois-4-cols", lambda module=module: module()(X, torch.zeros(1, 4)), RuntimeError,
          rf"{name}: rois must be a tensor of shape \[K, 5\]"),
        R(f"{name}-module-no-rois", lambda module=module: module()(X, [torch.zeros(0, 4)]), empty((0, 2, 2, 2))),
    ]

CASES += [
    R("roi_align-inf-coordinate", lambda: ops.roi_align(X, _t([[0, -INF, 0, INF, 4]]), 2), zeros((1, 2, 2, 2))),
    R("roi_align-inverted-roi-aligned", lambda: ops.roi_align(X, _t([[0, 6, 5, 1, 1]]), 2, 1.0, 2, True),
      same_as_torchvision(lambda: _tv().roi_align(X, _t([[0, 6, 5, 1, 1]]), 2, 1.0, 2, True))),
    R("roi_align-inverted-roi-adaptive", lambda: ops.roi_align(X, _t([[0, 6, 5, 1, 1]]), 2, 1.0, -1),
      same_as_torchvision(lambda: _tv().roi_align(X, _t([[0, 6, 5, 1, 1]]), 2, 1.0, -1))),
    R("roi_align-sampling_ratio-zero", lambda: _align(1.0, 0),
      same_as(lambda: _align(1.0, -1), what="adaptive sampling")),
    R("roi_align-sampling_ratio-negative", lambda: _align(1.0, -7),
      same_as(lambda: _align(1.0, -1), what="adaptive sampling")),
    E("roi_align-sampling_ratio-float", lambda: _align(1.0, 2.5), TypeError, r"roi_align: sampling_ratio"),
    E("roi_align-sampling_ratio-str", lambda: _align(1.0, "2"), ValueError, r"roi_align: sampling_ratio"),
    E("roi_align-sampling_ratio-none", lambda: _align(1.0, None), TypeError, r"roi_align: sampling_ratio"),
    E("roi_align-sampling_ratio-2^32+2", lambda: _align(1.0, 2**32 + 2), RuntimeError, r"roi_align: sampling_ratio"),
    E("roi_align-sampling_ratio-2^31", lambda: _align(1.0, 2**31), RuntimeError, r"roi_align: sampling_ratio"),
    E("roi_align-aligned-str", lambda: _align(1.0, 2, "no"), TypeError, r"roi_align: aligned"),
    E("roi_align-aligned-list", lambda: _align(1.0, 2, [False]), TypeError, r"roi_align: aligned"),
    E("roi_align-module-spatial_scale-str", lambda: ops.RoIAlign(2, "0.5", 2)(X, ROI), ValueError,
      r"roi_align: spatial_scale"),
    E("roi_align-module-sampling_ratio-none", lambda: ops.RoIAlign(2, 1.0, None)(X, ROI), TypeError,
      r"roi_align: sampling_ratio"),
    # roi_pool: coordinates beyond +-2^28 pixels are clamped there; argmax -1 marks bins that read nothing
    R("roi_pool-inf-coordinate", lambda: ops.roi_pool(X, _t([[0, -INF, 0, INF, 4]]), 2),
      same_as(lambda: ops.roi_pool(X, _t([[0, -2.0**28, 0, 2.0**28, 4]]), 2), what="the result for +-2^28")),
    R("raw-roi_pool-nan-coordinate-argmax", lambda: RAW.roi_pool(X, _t([[0, 1, NAN, 6, 5]]), 1.0, 2, 2)[1],
      equals(torch.full((1, 2, 2, 2), -1), torch.int32)),
    E("raw-roi_align-rois-on-meta", lambda: RAW.roi_align(X, ROI.to(META), 1.0, 2, 2, 2, False), RuntimeError,
      r"roi_align: input and rois must be on the same device"),
    E("raw-roi_align-input-on-meta", lambda: RAW.roi_align(X.to(META), ROI, 1.0, 2, 2, 2, False), RuntimeError,
      r"roi_align: input and rois must be on the same device"),
    E("raw-roi_pool-rois-on-meta", lambda: RAW.roi_pool(X, ROI.to(META), 1.0, 2, 2), RuntimeError,
      r"roi_pool: input and rois must be on the same device"),
    E("raw-_roi_align_backward-rois-on-meta", lambda: RAW._roi_align_backward(torch.ones(2, 2, 2, 2), ROI.to(META), 1.0,
                                                                             2, 2, 1, 2, 8, 8, 2, False),
      RuntimeError, r"rois.*same device|expected CPU"),
    E("raw-roi_align-output_size-zero", lambda: RAW.roi_align(X, ROI, 1.0, 0, 2, 2, False), RuntimeError,
      r"roi_align: output_size must be positive"),
    E("raw-roi_pool-spatial_scale-nan", lambda: RAW.roi_pool(X, ROI, NAN, 2, 2), RuntimeError,
      r"roi_pool: spatial_scale must be a positive number"),
    E("raw-roi_align-output_size-over-2^32-no-rois",
      lambda: RAW.roi_align(X, torch.zeros(0, 5), 1.0, 2**32 + 1, 1, 2, False),
      RuntimeError, r"roi_align: output_size must be at most 2\^31 - 1 per side"),
]

# ---------------------------------------------------------------------------------------------------------
# MultiScaleRoIAlign (and the raw multi_scale_roi_align op)
# Absent: more than 2^31 elements, for the reasons given for roi_align.
# ---------------------------------------------------------------------------------------------------------


def _msra(output_size=2, sampling_ratio=2, features=None, boxes=None, image_shapes=None, names=("p2", "p3"), **kw):
    pooler = ops.MultiScaleRoIAlign(list(names), output_size, sampling_ratio, **kw)
    return pooler(features if features is not None else _features(), boxes if boxes is not None else FPN_BOXES,
                  image_shapes if image_shapes is not None else FPN_IMAGES)


_MSRA_ROIS = _t([[0, 0, 0, 20, 20], [0, 4, 4, 60, 60]])
CASES += [
    E("MultiScaleRoIAlign-output_size-zero", lambda: _msra(0), RuntimeError,
      r"multi_scale_roi_align: output_size must be positive, got \(0, 0\)"),
    E("MultiScaleRoIAlign-output_size-negative", lambda: _msra((-1, 2)), RuntimeError,
      r"multi_scale_roi_align: output_size must be positive"),
    E("MultiScaleRoIAlign-output_size-3-values", lambda: _msra((2, 2, 2)), ValueError,
      r"MultiScaleRoIAlign: output_size"),
    E("MultiScaleRoIAlign-output_size-none", lambda: _msra(None), TypeError, r"MultiScaleRoIAlign: output_size"),
    E("MultiScaleRoIAlign-output_size-float", lambda: _msra(2.5), TypeError, r"MultiScaleRoIAlign: output_size"),
    E("MultiScaleRoIAlign-output_size-str", lambda: _msra("2"), ValueError, r"MultiScaleRoIAlign: output_size"),
    R("MultiScaleRoIAlign-sampling_ratio-zero", lambda: _msra(2, 0),
      same_as(lambda: _msra(2, -1), what="adaptive sampling")),
    E("MultiScaleRoIAlign-sampling_ratio-float", lambda: _msra(2, 2.5), TypeError,
      r"MultiScaleRoIAlign: sampling_ratio"),
    E("MultiScaleRoIAlign-sampling_ratio-str", lambda: _msra(2, "2"), ValueError,
      r"MultiScaleRoIAlign: sampling_ratio"),
    E("MultiScaleRoIAlign-sampling_ratio-none", lambda: _msra(2, None), TypeError,
      r"MultiScaleRoIAlign: sampling_ratio"),
    E("MultiScaleRoIAlign-sampling_ratio-2^32+2", lambda: _msra(2, 2**32 + 2), RuntimeError, r"sampling_ratio"),
    E("MultiScaleRoIAlign-canonical_scale-zero", lambda: _msra(canonical_scale=0), RuntimeError,
      r"multi_scale_roi_align: canonical_scale must be positive, got 0"),
    E("MultiScaleRoIAlign-canonical_scale-negative", lambda: _msra(canonical_scale=-224), RuntimeError,
      r"canonical_scale must be positive"),
    E("MultiScaleRoIAlign-canonical_scale-str", lambda: _msra(canonical_scale="big"), ValueError,
      r"MultiScaleRoIAlign: canonical_scale"),
    E("MultiScaleRoIAlign-featmap_names-none-present", lambda: _msra(names=("zz",)), ValueError,
      r"MultiScaleRoIAlign: none of featmap_names \['zz'\] is in x"),
    R("MultiScaleRoIAlign-boxes-tensor-K-5", lambda: _msra(boxes=_MSRA_ROIS),
      same_as(lambda: _msra(boxes=[_MSRA_ROIS[:, 1:]]))),
    E("MultiScaleRoIAlign-boxes-tensor-K-4", lambda: _msra(boxes=torch.zeros(1, 4)), RuntimeError,
      r"multi_scale_roi_align: rois must be a tensor of shape \[K, 5\]"),
    E("MultiScaleRoIAlign-boxes-5-cols", lambda: _msra(boxes=[torch.zeros(1, 5)]), ValueError,
      r"MultiScaleRoIAlign: boxes\[0\] must be a Tensor\[L, 4\]"),
    E("MultiScaleRoIAlign-boxes-int", lambda: _msra(boxes=[FPN_BOXES[0].long()]), RuntimeError,
      r"multi_scale_roi_align: rois must be a floating"),
    E("MultiScaleRoIAlign-boxes-none",
      lambda: ops.MultiScaleRoIAlign(["p2", "p3"], 2, 2)(_features(), None, FPN_IMAGES), TypeError,
      r"MultiScaleRoIAlign: boxes must be a Tensor\[K, 5\] or a list"),
    E("MultiScaleRoIAlign-boxes-empty-list", lambda: _msra(boxes=[]), ValueError,
      r"MultiScaleRoIAlign: boxes is an empty list"),
    E("MultiScaleRoIAlign-boxes-on-meta", lambda: _msra(boxes=[FPN_BOXES[0].to(META)]), ValueError,
      r"MultiScaleRoIAlign: .*same device"),
    E("MultiScaleRoIAlign-feature-on-meta", lambda: _msra(features=_features(p3=_fmap(1, 2, 8, 8).to(META))),
      ValueError,
      r"MultiScaleRoIAlign: .*same device"),
    E("MultiScaleRoIAlign-features-dtype-mix", lambda: _msra(features=_features(p3=_fmap(1, 2, 8, 8, torch.float64))),
      RuntimeError,
      r"multi_scale_roi_align: every feature map must have the dtype, batch size and channels of the first"),
    E("MultiScaleRoIAlign-features-channels-mix", lambda: _msra(features=_features(p3=_fmap(1, 3, 8, 8))), RuntimeError,
      r"every feature map must have the dtype, batch size and channels"),
    E("MultiScaleRoIAlign-features-int", lambda: _msra(features=_features(p2=_fmap(1, 2, 16, 16).long(),
                                                                          p3=_fmap(1, 2, 8, 8).long())),
      RuntimeError, r"multi_scale_roi_align: features must be float16, bfloat16, float32 or float64, got Long"),
    E("MultiScaleRoIAlign-features-complex", lambda: _msra(features=_features(dtype=torch.complex64)), RuntimeError,
      r"multi_scale_roi_align: features must be float16"),
    E("MultiScaleRoIAlign-features-3d",
      lambda: _msra(features=_features(p2=_fmap(1, 2, 16, 16)[0], p3=_fmap(1, 2, 8, 8)[0])),
      RuntimeError, r"multi_scale_roi_align: features must be a 4-D tensor"),
    E("MultiScaleRoIAlign-feature-empty-map", lambda: _msra(features=_features(p2=_fmap(1, 2, 0, 16))),
      (ValueError, RuntimeError),
      r"MultiScaleRoIAlign: .*feature"),
    E("MultiScaleRoIAlign-image_shapes-empty", lambda: _msra(image_shapes=[]), ValueError,
      r"images list should not be empty"),
    E("MultiScaleRoIAlign-image_shapes-zero", lambda: _msra(image_shapes=[(0, 0)]), ValueError,
      r"MultiScaleRoIAlign: image_shapes"),
    E("MultiScaleRoIAlign-image_shapes-negative", lambda: _msra(image_shapes=[(-64, 64)]), ValueError,
      r"MultiScaleRoIAlign: image_shapes"),
    E("MultiScaleRoIAlign-batch-index-negative", lambda: _msra(boxes=_t([[-1, 0, 0, 20, 20]])), RuntimeError,
      r"multi_scale_roi_align: rois\[0, 0\] = -1 is not a batch index"),
    E("MultiScaleRoIAlign-batch-index-nan", lambda: _msra(boxes=_t([[NAN, 0, 0, 20, 20]])), RuntimeError,
      r"multi_scale_roi_align: rois\[0, 0\] = nan is not a batch index"),
    E("MultiScaleRoIAlign-boxes-more-images-than-features", lambda: _msra(boxes=FPN_BOXES * 2), RuntimeError,
      r"multi_scale_roi_align: rois\[3, 0\] = 1 is not a batch index"),
    R("MultiScaleRoIAlign-no-boxes", lambda: _msra(boxes=[torch.zeros(0, 4)]), empty((0, 2, 2, 2))),
    R("MultiScaleRoIAlign-no-channels", lambda: _msra(features=_features(c=0)), empty((3, 0, 2, 2))),
    R("MultiScaleRoIAlign-nan-box", lambda: _msra(boxes=[_t([[0, 0, NAN, 20]])]), zeros((1, 2, 2, 2))),
    R("MultiScaleRoIAlign-negative-area-box", lambda: _msra(boxes=[_t([[20, 0, 0, 20]])]), zeros((1, 2, 2, 2))),
    R("MultiScaleRoIAlign-inverted-box", lambda: _msra(boxes=[_t([[20, 20, 0, 0]])]),
      same_as_torchvision(
          lambda: _tv().MultiScaleRoIAlign(["p2", "p3"], 2, 2)(_features(), [_t([[20, 20, 0, 0]])], FPN_IMAGES))),
    R("MultiScaleRoIAlign-noncontiguous",
      lambda: _msra(features=OrderedDict((k, _strided(v)) for k, v in _features().items()),
                                                         boxes=[_transposed(FPN_BOXES[0])]),
      same_as_contiguous(lambda: _msra())),
    E("raw-multi_scale_roi_align-scales-count",
      lambda: RAW.multi_scale_roi_align([X], ROI, [1.0, 0.5], 2, 2, 2, 224, 4),
      RuntimeError, r"spatial_scales must have one scale per feature map \(1\), got 2"),
    E("raw-multi_scale_roi_align-no-features", lambda: RAW.multi_scale_roi_align([], ROI, [], 2, 2, 2, 224, 4),
      RuntimeError,
      r"multi_scale_roi_align: features must hold at least one feature map"),
    E("raw-multi_scale_roi_align-scale-zero", lambda: RAW.multi_scale_roi_align([X], ROI, [0.0], 2, 2, 2, 224, 4),
      RuntimeError, r"multi_scale_roi_align: spatial_scale must be a positive number"),
    E("raw-multi_scale_roi_align-batch-mismatch",
      lambda: RAW.multi_scale_roi_align([X, _fmap(2, 2, 4, 4)], ROI, [1.0, 0.5], 2, 2, 2, 224, 4),
      RuntimeError, r"every feature map must have the dtype, batch size and channels"),
    E("raw-multi_scale_roi_align-feature-on-meta",
      lambda: RAW.multi_scale_roi_align([X, _fmap(1, 2, 4, 4).to(META)], ROI, [1.0, 0.5], 2, 2, 2, 224, 4),
      RuntimeError, r"multi_scale_roi_align: .*(same device|expected CPU)"),
]

# ---------------------------------------------------------------------------------------------------------
# AnchorGenerator, grid_anchors, single_level_anchors
# More than 2^31 anchors: the documented size check (2^40 per level) is tested; a grid below it but above
# 2^31 anchors would have to be allocated.
# ---------------------------------------------------------------------------------------------------------


def _gen(sizes=((32,),), ratios=((1.0,),)):
    return ops.AnchorGenerator(sizes, ratios)


def _anchors(*feature_maps, image=None, gen=None):
    return (gen or _gen())(image or _image_list(), list(feature_maps))


_FM = torch.zeros(1, 1, 4, 4)
_CELL = _t([[-2, -1, 2, 1], [-1, -2, 1, 2]])
CASES += [
    E("AnchorGenerator-sizes-zero", lambda: _gen(((0,),)), ValueError,
      r"AnchorGenerator: sizes must be positive and finite, got 0"),
    E("AnchorGenerator-sizes-negative", lambda: _gen(((-32,),)), ValueError,
      r"AnchorGenerator: sizes must be positive"),
    E("AnchorGenerator-sizes-inf", lambda: _gen(((INF,),)), ValueError,
      r"AnchorGenerator: sizes must be positive and finite"),
    E("AnchorGenerator-sizes-nan", lambda: _gen(((NAN,),)), ValueError,
      r"AnchorGenerator: sizes must be positive and finite"),
    E("AnchorGenerator-aspect_ratios-zero", lambda: _gen(ratios=((0.0,),)), ValueError,
      r"AnchorGenerator: aspect_ratios must be positive and finite, got 0.0"),
    E("AnchorGenerator-aspect_ratios-negative", lambda: _gen(ratios=((-1.0,),)), ValueError,
      r"AnchorGenerator: aspect_ratios must be positive"),
    E("AnchorGenerator-aspect_ratios-nan", lambda: _gen(ratios=((NAN,),)), ValueError,
      r"AnchorGenerator: aspect_ratios must be positive and finite, got nan"),
    E("AnchorGenerator-sizes-str", lambda: _gen((("32",),)), TypeError,
      r"AnchorGenerator: sizes must be numbers, got '32'"),
    E("AnchorGenerator-sizes-none-value", lambda: _gen(((None,),)), TypeError,
      r"AnchorGenerator: sizes must be numbers"),
    E("AnchorGenerator-sizes-bool", lambda: _gen(((True,),)), TypeError,
      r"AnchorGenerator: sizes must be numbers, got True"),
    E("AnchorGenerator-aspect_ratios-bool", lambda: _gen(ratios=((True,),)), TypeError,
      r"AnchorGenerator: aspect_ratios must be numbers, got True"),
    E("AnchorGenerator-sizes-tensor", lambda: _gen(((torch.tensor(32.0),),)), TypeError,
      r"AnchorGenerator: sizes must be numbers"),
    E("AnchorGenerator-aspect_ratios-str", lambda: _gen(ratios=(("1",),)), TypeError,
      r"AnchorGenerator: aspect_ratios must be numbers"),
    E("AnchorGenerator-sizes-none", lambda: _gen(None), TypeError, r"AnchorGenerator: sizes"),
    E("AnchorGenerator-sizes-empty", lambda: _gen((), ()), ValueError, r"AnchorGenerator: sizes"),
    E("AnchorGenerator-levels-mismatch", lambda: _gen(((32,), (64,)), ((1.0,),) * 3), ValueError,
      r"AnchorGenerator: sizes has 2 levels but aspect_ratios has 3"),
    E("AnchorGenerator-feature-map-count", lambda: _anchors(_FM, _FM), ValueError,
      r"AnchorGenerator: got 2 feature maps but sizes and aspect_ratios describe 1 levels"),
    E("AnchorGenerator-no-feature-maps", lambda: _anchors(), ValueError, r"AnchorGenerator: got 0 feature maps"),
    E("AnchorGenerator-feature-map-empty", lambda: _anchors(torch.zeros(1, 1, 0, 4)), ValueError,
      r"AnchorGenerator: feature map 0 has an empty spatial size \(0, 4\)"),
    E("AnchorGenerator-feature-map-over-2^40-anchors",
      lambda: _anchors(torch.zeros(1, 1, 1, 1).expand(1, 1, 2**20, 2**20),
                                                                        image=_image_list(2**20, 1)),
      RuntimeError, r"grid_anchors: level 0 is too large \(1048576 x 1048576 locations"),
    E("AnchorGenerator-feature-map-int", lambda: _anchors(_FM.long()), (ValueError, RuntimeError),
      r"AnchorGenerator: feature map"),
    E("AnchorGenerator-feature-map-bool", lambda: _anchors(_FM.bool()), (ValueError, RuntimeError),
      r"AnchorGenerator: feature map"),
    E("AnchorGenerator-feature-map-complex", lambda: _anchors(_FM.to(torch.complex64)), (ValueError, RuntimeError),
      r"AnchorGenerator: feature map"),
    R("AnchorGenerator-level-without-sizes", lambda: _anchors(_FM, gen=_gen(((),))), satisfies(
        lambda r: len(r) == 1 and tuple(r[0].shape) == (0, 4), "one empty [0, 4] tensor")),
    R("AnchorGenerator-no-images", lambda: _anchors(torch.zeros(0, 1, 4, 4), image=_image_list(n=0)), equals([])),
    R("AnchorGenerator-feature-map-noncontiguous", lambda: _anchors(_strided(_FM)),
      same_as_contiguous(lambda: _anchors(_FM))),
    # an image smaller than the feature map: stride image // feature = 0, every location at the origin (as torchvision)
    R("AnchorGenerator-image-smaller-than-feature-map", lambda: _anchors(_FM, image=_image_list(2, 3)),
      same_as_torchvision(lambda: _tv_anchor_generator()(_image_list(2, 3), [_FM]))),
    R("AnchorGenerator-feature-map-on-meta", lambda: _anchors(_FM.to(META)), satisfies(
        lambda r: r[0].device == META and tuple(r[0].shape) == (16, 4), "meta anchors of shape (16, 4)")),
    E("grid_anchors-level-count", lambda: ops.grid_anchors([_CELL], [(2, 2), (2, 2)], [(1, 1)]), ValueError,
      r"grid_anchors: cell_anchors has 1 levels, grid_sizes 2 and strides 1; they must match"),
    E("grid_anchors-no-levels", lambda: ops.grid_anchors([], [], []), ValueError, r"grid_anchors: at least one level"),
    E("grid_anchors-grid_sizes-negative", lambda: ops.grid_anchors([_CELL], [(-2, 2)], [(1, 1)]), RuntimeError,
      r"grid_anchors: grid_sizes must be non-negative, got \(-2, 2\) at level 0"),
    E("grid_anchors-grid_sizes-3-values", lambda: ops.grid_anchors([_CELL], [(2, 2, 2)], [(1, 1)]), RuntimeError,
      r"grid_anchors: grid_sizes must hold \(height, width\)"),
    E("grid_anchors-strides-negative", lambda: ops.grid_anchors([_CELL], [(2, 2)], [(-1, 1)]), RuntimeError,
      r"grid_anchors: strides must be non-negative"),
    R("grid_anchors-strides-zero", lambda: ops.grid_anchors([_CELL], [(2, 3)], [(0, 0)], 0.5),
      same_as(lambda: (_CELL + 0.5).repeat(6, 1), what="the cell anchors + offset at every location")),
    E("grid_anchors-cell_anchors-3-cols", lambda: ops.grid_anchors([torch.zeros(1, 3)], [(2, 2)], [(1, 1)]),
      RuntimeError,
      r"grid_anchors: cell_anchors must be a tensor of shape \[A, 4\]"),
    E("grid_anchors-cell_anchors-int", lambda: ops.grid_anchors([_CELL.long()], [(2, 2)], [(1, 1)]), RuntimeError,
      r"grid_anchors: cell_anchors must be a floating-point tensor, got Long"),
    E("grid_anchors-cell_anchors-bool", lambda: ops.grid_anchors([_CELL.bool()], [(2, 2)], [(1, 1)]), RuntimeError,
      r"grid_anchors: cell_anchors must be a floating-point tensor, got Bool"),
    E("grid_anchors-cell_anchors-complex", lambda: ops.grid_anchors([_CELL.to(torch.complex64)], [(2, 2)], [(1, 1)]),
      RuntimeError, r"grid_anchors: cell_anchors must be a floating-point tensor"),
    R("grid_anchors-cell_anchors-mixed-dtypes",
      lambda: ops.grid_anchors([_CELL, _CELL.double()], [(1, 2), (2, 1)], [(4, 4)] * 2),
      same_as(lambda: ops.grid_anchors([_CELL.double(), _CELL.double()], [(1, 2), (2, 1)], [(4, 4)] * 2))),
    E("grid_anchors-cell_anchors-mixed-devices",
      lambda: ops.grid_anchors([_CELL, _CELL.to(META)], [(1, 2)] * 2, [(4, 4)] * 2),
      ValueError, r"grid_anchors: cell_anchors .*same device"),
    E("grid_anchors-offset-nan", lambda: ops.grid_anchors([_CELL], [(2, 2)], [(1, 1)], NAN), RuntimeError,
      r"grid_anchors: offset must be finite, got nan"),
    E("grid_anchors-offset-inf", lambda: ops.grid_anchors([_CELL], [(2, 2)], [(1, 1)], INF), RuntimeError,
      r"grid_anchors: offset must be finite"),
    E("grid_anchors-offset-str", lambda: ops.grid_anchors([_CELL], [(2, 2)], [(1, 1)], "half"), ValueError,
      r"grid_anchors: offset"),
    E("grid_anchors-offset-none", lambda: ops.grid_anchors([_CELL], [(2, 2)], [(1, 1)], None), TypeError,
      r"grid_anchors: offset"),
    R("grid_anchors-no-cell-anchors", lambda: ops.grid_anchors([torch.zeros(0, 4)], [(2, 2)], [(1, 1)]), empty((0, 4))),
    R("grid_anchors-empty-grid", lambda: ops.grid_anchors([_CELL], [(0, 2)], [(1, 1)]), empty((0, 4))),
    R("grid_anchors-cell_anchors-noncontiguous", lambda: ops.grid_anchors([_strided(_CELL)], [(2, 3)], [(4, 4)]),
      same_as_contiguous(lambda: ops.grid_anchors([_CELL], [(2, 3)], [(4, 4)]))),
    R("grid_anchors-cell_anchors-nan", lambda: ops.grid_anchors([_t([[NAN, 0, 1, 1]])], [(1, 2)], [(4, 4)]),
      equals([[NAN, 0, 1, 1], [NAN, 0, 5, 1]])),
    E("grid_anchors-over-2^40", lambda: ops.grid_anchors([_CELL], [(2**40, 1)], [(1, 1)]), RuntimeError,
      r"grid_anchors: level 0 is too large"),
    # 2^32 x 2^32 locations: the product overflows int64 to 0 and must not pass as an empty level.
    E("grid_anchors-locations-product-overflows", lambda: ops.grid_anchors([_CELL, _CELL], [(2**32, 2**32), (2, 2)],
                                                                       [(1, 1), (1, 1)]),
      RuntimeError, r"grid_anchors: level 0 is too large"),
    E("raw-grid_anchors-anchors_per_level-negative", lambda: RAW.grid_anchors(_CELL, [-1], [2, 2], [1, 1], 0.0),
      RuntimeError, r"grid_anchors: anchors_per_level must be non-negative"),
    E("raw-grid_anchors-anchors_per_level-sum", lambda: RAW.grid_anchors(_CELL, [3], [2, 2], [1, 1], 0.0), RuntimeError,
      r"grid_anchors: anchors_per_level sums to 3 but cell_anchors has 2 rows"),
    E("single_level_anchors-feature_size-negative", lambda: ops.single_level_anchors((-1, 2)), ValueError,
      r"single_level_anchors: feature_size must be non-negative"),
    R("single_level_anchors-feature_size-zero", lambda: ops.single_level_anchors((0, 2)), empty((0, 4))),
    E("single_level_anchors-feature_size-none", lambda: ops.single_level_anchors(None), TypeError,
      r"single_level_anchors: feature_size"),
    E("single_level_anchors-feature_size-str", lambda: ops.single_level_anchors("ab"), ValueError,
      r"single_level_anchors: feature_size"),
    E("single_level_anchors-feature_size-float", lambda: ops.single_level_anchors((2.5, 2)), TypeError,
      r"single_level_anchors: feature_size"),
    E("single_level_anchors-feature_size-over-2^40", lambda: ops.single_level_anchors((2**20, 2**20)), RuntimeError,
      r"level 0 is too large"),
    E("single_level_anchors-stride-zero", lambda: ops.single_level_anchors((2, 2), 0), ValueError,
      r"single_level_anchors: stride must be a positive int, got 0"),
    E("single_level_anchors-stride-negative", lambda: ops.single_level_anchors((2, 2), -16), ValueError,
      r"single_level_anchors: stride must be a positive int"),
    E("single_level_anchors-stride-float", lambda: ops.single_level_anchors((2, 2), 16.0), ValueError,
      r"single_level_anchors: stride must be a positive int, got 16.0"),
    R("single_level_anchors-stride-bool", lambda: ops.single_level_anchors((2, 2), True),
      same_as(lambda: ops.single_level_anchors((2, 2), 1))),
    E("single_level_anchors-scales-zero", lambda: ops.single_level_anchors((2, 2), 16, (0,)), ValueError,
      r"single_level_anchors: scales must be positive"),
    E("single_level_anchors-aspect_ratios-negative", lambda: ops.single_level_anchors((2, 2), 16, (8,), (-1.0,)),
      ValueError,
      r"aspect_ratios must be positive and finite, got -1.0"),
    E("single_level_anchors-aspect_ratios-str", lambda: ops.single_level_anchors((2, 2), 16, (8,), ("1",)), TypeError,
      r"aspect_ratios must be numbers"),
    R("single_level_anchors-scales-empty", lambda: ops.single_level_anchors((2, 2), 16, ()), empty((0, 4))),
    E("single_level_anchors-dtype-int", lambda: ops.single_level_anchors((2, 2), dtype=torch.int64),
      (ValueError, TypeError),
      r"single_level_anchors: dtype"),
]


# ---------------------------------------------------------------------------------------------------------
# BoxCoder, encode_boxes, decode_boxes
# Absent: more than 2^31 boxes. The result has 4 values per box; with zero boxes of deltas (rel_codes
# [N, 0]) decode_boxes still copies the N reference boxes, so no row stays small.
# ---------------------------------------------------------------------------------------------------------
_CODER = ops.BoxCoder(W)
_PROPS = B + _t([1, 0, 2, 1])


def _decode_vs_torchvision(weights, clip=math.log(1000.0 / 16), deltas=DELTAS):
    return R(
        f"BoxCoder-decode-weights-{'-'.join(str(w) for w in weights)}"
        + ("" if clip == math.log(1000.0 / 16) else f"-clip-{clip}"),
        lambda: ops.BoxCoder(weights, clip).decode_single(deltas, B),
        same_as_torchvision(lambda: _tv_box_coder(weights, clip).decode_single(deltas, B), exact=False),
    )


CASES += [
    E("BoxCoder-weights-3-values", lambda: ops.BoxCoder((1.0, 1.0, 1.0)), ValueError,
      r"BoxCoder: weights must be 4 numbers \(wx, wy, ww, wh\), got 3"),
    E("BoxCoder-weights-none", lambda: ops.BoxCoder(None), TypeError, r"BoxCoder: weights must be 4 numbers"),
    E("BoxCoder-weights-str", lambda: ops.BoxCoder("abcd"), TypeError, r"BoxCoder: weights must be 4 numbers"),
    E("BoxCoder-weights-numeric-strings", lambda: ops.BoxCoder(("1", "1", "1", "1")), TypeError, r"BoxCoder: weights"),
    R("BoxCoder-weights-bool", lambda: ops.BoxCoder((True, 1.0, 1.0, 1.0)).decode_single(DELTAS, B),
      same_as(lambda: ops.BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(DELTAS, B))),
    R("BoxCoder-weights-tensor", lambda: ops.BoxCoder(torch.tensor(W)).decode_single(DELTAS, B),
      same_as(lambda: _CODER.decode_single(DELTAS, B))),
    # zero, negative and NaN weights follow torchvision's formulas (division by a zero weight: inf / NaN)
    _decode_vs_torchvision((0.0, 0.0, 0.0, 0.0)),
    _decode_vs_torchvision((-1.0, 1.0, -2.0, 1.0)),
    _decode_vs_torchvision((NAN, 1.0, 1.0, 1.0)),
    _decode_vs_torchvision(W, clip=-1.0),
    _decode_vs_torchvision(W, clip=INF),
    R("BoxCoder-encode-weights-zero", lambda: ops.BoxCoder((0.0, 0.0, 0.0, 0.0)).encode_single(B, _PROPS),
      zeros((5, 4))),
    R("BoxCoder-encode-weights-negative", lambda: ops.BoxCoder((-1.0, 1.0, -2.0, 1.0)).encode_single(B, _PROPS),
      same_as_torchvision(lambda: _tv_box_coder((-1.0, 1.0, -2.0, 1.0)).encode_single(B, _PROPS), exact=False)),
    E("BoxCoder-bbox_xform_clip-nan", lambda: ops.BoxCoder(W, NAN), ValueError,
      r"BoxCoder: bbox_xform_clip must not be NaN"),
    E("BoxCoder-bbox_xform_clip-str", lambda: ops.BoxCoder(W, "big"), ValueError, r"BoxCoder: bbox_xform_clip"),
    E("BoxCoder-bbox_xform_clip-none", lambda: ops.BoxCoder(W, None), TypeError, r"BoxCoder: bbox_xform_clip"),
    E("BoxCoder-decode-boxes-not-list", lambda: _CODER.decode(DELTAS, B), TypeError,
      r"BoxCoder.decode: boxes must be a list or tuple of Tensor\[N_i, 4\]"),
    E("BoxCoder-decode-rel_codes-not-tensor", lambda: _CODER.decode(DELTAS.tolist(), [B]), TypeError,
      r"BoxCoder.decode: rel_codes must be a Tensor"),
    E("BoxCoder-decode-rel_codes-5-cols", lambda: _CODER.decode(torch.zeros(5, 5), [B]), RuntimeError,
      r"decode_boxes: rel_codes must hold 4 deltas .* multiple of 4"),
    R("BoxCoder-decode-no-boxes", lambda: _CODER.decode(torch.zeros(0, 4), [torch.zeros(0, 4)]), empty((0, 4))),
    R("BoxCoder-decode-no-images", lambda: _CODER.decode(torch.zeros(0, 4), []), empty((0, 4))),
    E("BoxCoder-decode-boxes-on-meta", lambda: _CODER.decode(DELTAS, [B.to(META)]), ValueError,
      r"rel_codes and boxes must be on the same device"),
    # encode_boxes (encode_single)
    E("encode_boxes-reference_boxes-3-cols", lambda: _CODER.encode_single(torch.zeros(5, 3), B), RuntimeError,
      r"encode_boxes: reference_boxes must have 4 values"),
    E("encode_boxes-proposals-3-cols", lambda: _CODER.encode_single(B, torch.zeros(5, 3)), RuntimeError,
      r"encode_boxes: proposals must have 4 values"),
    E("encode_boxes-length-mismatch", lambda: _CODER.encode_single(B, B[:2]), RuntimeError,
      r"encode_boxes: reference_boxes and proposals must have the same number of boxes, got 5 and 2"),
    E("encode_boxes-reference_boxes-1d", lambda: _CODER.encode_single(torch.zeros(4), torch.zeros(4)), RuntimeError,
      r"encode_boxes: reference_boxes must be a 2-D tensor"),
    E("encode_boxes-reference_boxes-3d", lambda: _CODER.encode_single(B[None], B[None]), RuntimeError,
      r"encode_boxes: reference_boxes must be a 2-D tensor"),
    E("encode_boxes-int", lambda: _CODER.encode_single(B.long(), B.long()), RuntimeError,
      r"encode_boxes: reference_boxes must be a floating-point tensor"),
    E("encode_boxes-bool", lambda: _CODER.encode_single(B, B.bool()), RuntimeError,
      r"encode_boxes: proposals must be a floating-point tensor"),
    E("encode_boxes-complex", lambda: _CODER.encode_single(B.to(torch.complex64), B), RuntimeError,
      r"encode_boxes: reference_boxes must be a floating-point tensor"),
    R("encode_boxes-mixed-float32-float64", lambda: _CODER.encode_single(B.double(), _PROPS),
      same_as(lambda: _CODER.encode_single(B.double(), _PROPS.double()))),
    E("encode_boxes-list", lambda: _CODER.encode_single(B.tolist(), B), TypeError, r"encode_boxes: reference_boxes"),
    E("encode_boxes-proposals-on-meta", lambda: _CODER.encode_single(B, B.to(META)), ValueError,
      r"encode_boxes: reference_boxes and proposals must be on the same device"),
    E("encode_boxes-weights-3-values", lambda: ops.encode_boxes(B, B, (1.0, 1.0, 1.0)), ValueError,
      r"encode_boxes: weights must be 4 numbers"),
    R("encode_boxes-empty", lambda: _CODER.encode_single(torch.zeros(0, 4), torch.zeros(0, 4)), empty((0, 4))),
    R("encode_boxes-noncontiguous", lambda: _CODER.encode_single(_strided(B), _transposed(_PROPS)),
      same_as_contiguous(lambda: _CODER.encode_single(B, _PROPS))),
    R("encode_boxes-nan", lambda: _CODER.encode_single(_t([[0, 0, NAN, 1]]), _t([[0, 0, 1, 1]])),
      satisfies(lambda r: r[0].isnan().tolist() == [True, False, True, False], "NaN in dx and dw only")),
    R("encode_boxes-zero-size-proposal", lambda: _CODER.encode_single(B, torch.zeros(5, 4)),
      same_as_torchvision(lambda: _tv_box_coder(W).encode_single(B, torch.zeros(5, 4)))),
    R("encode_boxes-inverted-proposal", lambda: _CODER.encode_single(B, B.flip(1)),
      same_as_torchvision(lambda: _tv_box_coder(W).encode_single(B, B.flip(1)), exact=False)),
    # decode_boxes (decode_single)
    E("decode_boxes-rel_codes-5-cols", lambda: _CODER.decode_single(torch.zeros(5, 5), B), RuntimeError,
      r"decode_boxes: rel_codes must hold 4 deltas"),
    E("decode_boxes-boxes-5-cols", lambda: _CODER.decode_single(DELTAS, torch.zeros(5, 5)), RuntimeError,
      r"decode_boxes: boxes must have 4 values"),
    E("decode_boxes-length-mismatch", lambda: _CODER.decode_single(DELTAS[:2], B), RuntimeError,
      r"decode_boxes: rel_codes and boxes must have the same number of rows, got 2 and 5"),
    E("decode_boxes-rel_codes-1d", lambda: _CODER.decode_single(torch.zeros(4), B[:1]), RuntimeError,
      r"decode_boxes: rel_codes must be a 2-D tensor"),
    E("decode_boxes-rel_codes-int", lambda: _CODER.decode_single(DELTAS.long(), B), RuntimeError,
      r"decode_boxes: rel_codes must be a floating-point tensor, got Long"),
    E("decode_boxes-rel_codes-bool", lambda: _CODER.decode_single(DELTAS.bool(), B), RuntimeError,
      r"decode_boxes: rel_codes must be a floating-point tensor, got Bool"),
    E("decode_boxes-rel_codes-complex", lambda: _CODER.decode_single(DELTAS.to(torch.complex64), B), RuntimeError,
      r"decode_boxes: rel_codes must be a floating-point tensor"),
    E("decode_boxes-boxes-int", lambda: _CODER.decode_single(DELTAS, B.long()), RuntimeError,
      r"decode_boxes: boxes must be a floating-point tensor"),
    R("decode_boxes-mixed-float64-float32", lambda: _CODER.decode_single(DELTAS.double(), B),
      same_as(lambda: _CODER.decode_single(DELTAS.double(), B.double()))),
    E("decode_boxes-boxes-on-meta", lambda: _CODER.decode_single(DELTAS, B.to(META)), ValueError,
      r"decode_boxes: rel_codes and boxes must be on the same device"),
    E("decode_boxes-rel_codes-on-meta", lambda: _CODER.decode_single(DELTAS.to(META), B), ValueError,
      r"decode_boxes: rel_codes and boxes must be on the same device"),
    E("decode_boxes-bbox_xform_clip-nan", lambda: ops.decode_boxes(DELTAS, B, W, NAN), RuntimeError,
      r"decode_boxes: bbox_xform_clip must not be NaN"),
    E("decode_boxes-bbox_xform_clip-str", lambda: ops.decode_boxes(DELTAS, B, W, "big"), ValueError,
      r"decode_boxes: bbox_xform_clip"),
    E("decode_boxes-bbox_xform_clip-none", lambda: ops.decode_boxes(DELTAS, B, W, None), TypeError,
      r"decode_boxes: bbox_xform_clip"),
    E("raw-decode_boxes-weights-3-values", lambda: RAW.decode_boxes(DELTAS, B, [1.0, 1.0, 1.0], 4.0), RuntimeError,
      r"decode_boxes: weights must hold 4 values"),
    R("decode_boxes-empty", lambda: _CODER.decode_single(torch.zeros(0, 4), torch.zeros(0, 4)), empty((0, 4))),
    R("decode_boxes-no-classes", lambda: _CODER.decode_single(torch.zeros(5, 0), B), empty((5, 0))),
    R("decode_boxes-noncontiguous", lambda: _CODER.decode_single(_transposed(DELTAS), _strided(B)),
      same_as_contiguous(lambda: _CODER.decode_single(DELTAS, B))),
    R("decode_boxes-nan", lambda: _CODER.decode_single(_t([[NAN, 0, 0, 0]]), B[:1]),
      satisfies(lambda r: r[0].isnan().tolist() == [True, False, True, False], "NaN in x1 and x2 only")),
    R("decode_boxes-nan-box", lambda: _CODER.decode_single(DELTAS[:2], _t([[0, NAN, 4, 4], [0, 0, 4, 4]])),
      _nan_rows_in_columns(0, [1, 3])),
    # dw, dh are clamped from above at bbox_xform_clip: +inf decodes as the clip value, -inf as zero size
    R("decode_boxes-inf-deltas", lambda: _CODER.decode_single(_t([[0, 0, INF, -INF]]), B[:1]),
      same_as(lambda: _CODER.decode_single(_t([[0, 0, 5 * math.log(1000.0 / 16), -1e30]]), B[:1]),
              exact=False, what="dw at bbox_xform_clip, dh at -1e30")),
]


# ---------------------------------------------------------------------------------------------------------
# patch_torchvision / unpatch_torchvision / torchvision_patched; the CPU capability switch.
# empty_cpu_cache() and cpu_cache_bytes() take no arguments: they have no bad input.
# ---------------------------------------------------------------------------------------------------------


def _unpatch_when_not_patched():
    import torchvision.ops

    before = torchvision.ops.nms
    ops.unpatch_torchvision()
    return (ops.torchvision_patched(), torchvision.ops.nms is before)


def _patch_twice():
    import torchvision.ops

    original = torchvision.ops.nms
    ops.patch_torchvision()
    ops.patch_torchvision()
    patched = (ops.torchvision_patched(), torchvision.ops.nms is ops.nms)
    ops.unpatch_torchvision()
    return patched + (ops.torchvision_patched(), torchvision.ops.nms is original)


CASES += [
    R("unpatch_torchvision-when-not-patched", _unpatch_when_not_patched, equals([False, True])),
    R("patch_torchvision-twice-then-unpatch", _patch_twice, equals([True, True, False, True])),
    E("set-capability-bogus", lambda: RAW._set_cpu_capability("sse4"), RuntimeError,
      r"capability must be one of 'default', 'avx2', 'avx512', got 'sse4'"),
]

# ---------------------------------------------------------------------------------------------------------
# Rows of the runner's self-test (not part of the matrix): a crash, a hang, a wrong outcome.
# ---------------------------------------------------------------------------------------------------------
SELF_TEST_CASES = [
    E("selftest-abort", lambda: os.abort(), RuntimeError, r"never reached"),
    E("selftest-segfault", lambda: os.kill(os.getpid(), signal.SIGSEGV), RuntimeError, r"never reached"),
    E("selftest-hang", lambda: time.sleep(600), RuntimeError, r"never reached"),
    E("selftest-ok", lambda: ops.nms(B, S.double(), 0.5), RuntimeError, r"same dtype"),
    E("selftest-wrong-exception-type", lambda: ops.nms(B, S.double(), 0.5), ValueError, r"same dtype"),
    E("selftest-wrong-message", lambda: ops.nms(B, S.double(), 0.5), RuntimeError, r"some other message"),
    E("selftest-no-exception", lambda: ops.nms(B, S, 0.5), RuntimeError, r"anything"),
    R("selftest-wrong-result", lambda: ops.nms(B, S, 0.5), equals([0, 1], torch.int64)),
    R("selftest-unexpected-exception", lambda: ops.nms(B, S.double(), 0.5), equals([0], torch.int64)),
    R("selftest-pid", lambda: os.getpid(), satisfies(lambda r: r > 0, "a process id")),
]

CASE_BY_ID = {c.id: c for c in CASES + SELF_TEST_CASES}


# =========================================================================================================
# The runner: a persistent worker process that runs rows by id
# =========================================================================================================

WORKER_MEMORY_LIMIT = 6 * 2**30  # address space of the worker: a row that tries to allocate gigabytes fails
CASE_TIMEOUT_S = 60.0  # per row (the machine may be busy); a hang fails its row
STARTUP_TIMEOUT_S = 180.0


def _evaluate(case):
    """Runs one row in this process; returns (passed, detail)."""
    outcome = case.outcome
    try:
        result = case.call()
    except Exception as err:  # noqa: BLE001 - every exception is an outcome to compare
        message = f"{type(err).__name__}: {str(err)[:800]}"
        if isinstance(outcome, Raises):
            if not isinstance(err, outcome.exc):
                return False, f"raised {message}\nrequired: {outcome.describe()}"
            if not re.search(outcome.match, str(err)):
                return False, f"raised {message}\nrequired message to match {outcome.match!r}"
            return True, message
        return False, f"raised {message}\nrequired result: {outcome.describe()}"
    if isinstance(outcome, Raises):
        return False, f"returned {_summary(result)}\nrequired: {outcome.describe()}"
    try:
        outcome.check(result)
    except Exception as err:  # noqa: BLE001 - a failed check, or a check that cannot apply to the result
        return False, f"returned {_summary(result)}\nrequired: {outcome.describe()}\n{type(err).__name__}: {err}"
    return True, _summary(result)


def _worker_main():
    """Worker loop: reads a row id per line on stdin, answers one JSON line per row on the original stdout."""
    import resource

    if "asan" not in os.environ.get("LD_PRELOAD", ""):  # AddressSanitizer's shadow memory needs terabytes of it
        resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_LIMIT, WORKER_MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash ends the worker at once (no core dump to write)
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything the rows print goes to stderr, not into the protocol
    answers.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        case_id = line.strip()
        case = CASE_BY_ID.get(case_id)
        if case is None:
            passed, detail = False, f"no row with id {case_id!r}"
        else:
            sys.stderr.write(f"--- {case_id}\n")
            sys.stderr.flush()
            passed, detail = _evaluate(case)
        answers.write(json.dumps({"id": case_id, "passed": passed, "detail": detail}) + "\n")


class _Worker:
    """Runs rows in a child process (this file run with --worker), restarting it after a crash or hang."""

    def __init__(self, case_timeout=CASE_TIMEOUT_S):
        self.case_timeout = case_timeout
        self.proc = None
        self.pid = None
        self._buffer = b""
        self._stderr = None

    def _start(self):
        here = os.path.dirname(os.path.abspath(__file__))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(here)] + [p for p in [env.get("PYTHONPATH")] if p])
        env.setdefault("OMP_NUM_THREADS", "1")
        self._stderr = tempfile.TemporaryFile()
        self._buffer = b""
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env, cwd=os.path.dirname(here))
        ready = self._read_line(STARTUP_TIMEOUT_S)
        if not isinstance(ready, dict) or "ready" not in ready:
            status = self._stop()
            raise RuntimeError(f"the worker did not start ({status}):\n{self._stderr_tail()}")
        self.pid = ready["ready"]

    _TIMEOUT, _EOF = "timeout", "eof"

    def _read_line(self, timeout):
        """The next JSON answer, or _TIMEOUT, or _EOF (the worker closed its end: it died)."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return self._TIMEOUT
            chunk = os.read(fd, 65536)
            if not chunk:
                return self._EOF
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _stderr_tail(self, limit=2000):
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-limit:]

    def _stop(self):
        """Ends the worker (it is this runner's own child); returns how it ended."""
        proc, self.proc = self.proc, None
        if proc is None:
            return "not running"
        try:
            code = proc.wait(timeout=5)  # after end of file on its stdout the worker is exiting
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        if code < 0:
            return f"killed by signal {signal.Signals(-code).name} (exit code {code})"
        return f"exit code {code}"

    def run(self, case_id, timeout=None):
        """Returns (status, detail): status is 'passed', 'failed', 'crashed' or 'timed out'."""
        if self.proc is None:
            self._start()
        self.proc.stdin.write((case_id + "\n").encode())
        self.proc.stdin.flush()
        answer = self._read_line(timeout or self.case_timeout)
        if not isinstance(answer, dict):
            timed_out = answer == self._TIMEOUT
            if timed_out:
                self.proc.kill()
            how = self._stop()
            tail = self._stderr_tail()
            tail = tail[tail.rfind(f"--- {case_id}\n"):] if f"--- {case_id}\n" in tail else tail
            if timed_out:
                return "timed out", f"no answer within {timeout or self.case_timeout:.0f} s; worker {how}\n{tail}"
            return "crashed", f"the worker died: {how}\n{tail}"
        assert answer["id"] == case_id, answer
        return ("passed" if answer["passed"] else "failed"), answer["detail"]

    def close(self):
        if self.proc is not None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self._stop()


class RowFailed(AssertionError):
    """The row's call gave another outcome than the one required."""


class RowCrashed(AssertionError):
    """The row's call killed the worker process or hung."""


@pytest.fixture(scope="module")
def worker():
    w = _Worker()
    yield w
    w.close()


def _param(case):
    marks = [pytest.mark.xfail(strict=True, raises=RowFailed, reason=case.bug)] if case.bug else []
    return pytest.param(case.id, marks=marks, id=case.id)


@pytest.mark.parametrize("case_id", [_param(c) for c in CASES])
def test_bad_input(worker, case_id):
    status, detail = worker.run(case_id)
    if status == "failed":
        raise RowFailed(f"{case_id}: {detail}")
    if status != "passed":
        raise RowCrashed(f"{case_id}: {status}: {detail}")


def test_case_ids_are_unique():
    ids = [c.id for c in CASES + SELF_TEST_CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert all(re.fullmatch(r"[\w.^+-]+", i) for i in ids), [i for i in ids if not re.fullmatch(r"[\w.^+-]+", i)]


def test_every_outcome_is_stated():
    for case in CASES:
        assert isinstance(case.outcome, (Raises, Gives)), case.id
        if isinstance(case.outcome, Raises):
            assert case.outcome.match, f"{case.id}: an error row needs a message pattern"
        assert case.bug is None or len(case.bug) > 20, f"{case.id}: say what the library does now"


def test_runner_isolates_crashes_and_hangs():
    """A row that kills its process (os.abort, SIGSEGV) or hangs fails on its own; the next row still runs, in a
    fresh worker."""
    w = _Worker()
    try:
        status, detail = w.run("selftest-pid")
        first_pid = w.pid
        assert status == "passed", detail
        status, detail = w.run("selftest-abort")
        assert status == "crashed" and "SIGABRT" in detail, (status, detail)
        status, detail = w.run("selftest-ok")
        assert status == "passed", detail
        assert w.pid != first_pid, "a fresh worker runs the row after a crash"
        second_pid = w.pid
        # Under AddressSanitizer a SIGSEGV is ASan's own report (and fails the sanitizer run by design).
        if "libasan" not in os.environ.get("LD_PRELOAD", ""):
            status, detail = w.run("selftest-segfault")
            assert status == "crashed" and "SIGSEGV" in detail, (status, detail)
        status, detail = w.run("selftest-hang", timeout=2)
        assert status == "timed out", (status, detail)
        status, detail = w.run("selftest-ok")
        assert status == "passed" and w.pid not in (first_pid, second_pid), (status, detail)
    finally:
        w.close()


@pytest.mark.parametrize(
    "case_id,needle",
    [
        ("selftest-wrong-exception-type", "raised RuntimeError"),
        ("selftest-wrong-message", "required message to match"),
        ("selftest-no-exception", "returned Tensor"),
        ("selftest-wrong-result", "required: equal to [0, 1]"),
        ("selftest-unexpected-exception", "raised RuntimeError"),
        ("no-such-row", "no row with id"),
    ],
)
def test_runner_reports_wrong_outcomes(worker, case_id, needle):
    status, detail = worker.run(case_id)
    assert status == "failed" and needle in detail, (status, detail)


def test_valid_versions_of_the_bad_calls_work():
    # The table's inputs are only bad in the way each row says: the plain calls succeed.
    assert ops.nms(B, S, 0.5).dtype == torch.int64
    assert ops.batched_nms(B, S, I, 0.5).dtype == torch.int64
    for _, fn, raw, extra in OVERLAP:
        assert fn(B, B).shape == (5, 5)
        assert raw(B, B, *extra).shape == (5, 5)
    assert ops.box_iou(B, B, fmt="xywh").shape == (5, 5)
    assert ops.roi_align(X, ROI, 2, 1.0, 2).shape == (2, 2, 2, 2)
    assert ops.roi_pool(X, ROI, 2).shape == (2, 2, 2, 2)
    assert _msra().shape == (3, 2, 2, 2)
    assert _anchors(_FM)[0].shape == (16, 4)
    assert ops.grid_anchors([_CELL], [(2, 2)], [(1, 1)]).shape == (8, 4)
    assert ops.single_level_anchors((2, 2)).shape == (36, 4)
    assert _CODER.decode_single(_CODER.encode_single(B, _PROPS), _PROPS).shape == (5, 4)


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
