"""Invalid arguments: each op, each bad input, the exception type and a message that names the argument.

The table lists (id, call, exception type, regex the message must match). Calls go through the public
wrappers (``pydet_ops.*``) and, where the check lives in the kernel, through the raw ops as well.
"""

import pytest
import torch

import pydet_ops as ops

RAW = torch.ops.pydet_ops


def _boxes(n=5, dtype=torch.float32):
    xy = torch.arange(2 * n, dtype=torch.float64).reshape(n, 2)
    return torch.cat([xy, xy + 3], dim=1).to(dtype)


def _scores(n=5, dtype=torch.float32):
    return torch.linspace(0.1, 0.9, n, dtype=dtype)


def _idxs(n=5, dtype=torch.int64):
    return (torch.arange(n) % 2).to(dtype)


B, S, I = _boxes(), _scores(), _idxs()
META = torch.device("meta")

CASES = [
    # --- nms ---------------------------------------------------------------------------------------------
    ("nms-boxes-5-cols", lambda: ops.nms(torch.zeros(5, 5), S, 0.5), RuntimeError, r"nms: boxes .*4"),
    ("nms-boxes-1d", lambda: ops.nms(torch.zeros(20), S, 0.5), RuntimeError, r"nms: boxes must be a 2-D"),
    ("nms-boxes-3d", lambda: ops.nms(B[None], S, 0.5), RuntimeError, r"nms: boxes must be a 2-D"),
    ("nms-boxes-0d", lambda: ops.nms(torch.tensor(1.0), S, 0.5), RuntimeError, r"nms: boxes"),
    ("nms-scores-2d", lambda: ops.nms(B, S[:, None], 0.5), RuntimeError, r"nms: scores must be a 1-D"),
    ("nms-scores-0d", lambda: ops.nms(B, torch.tensor(0.5), 0.5), RuntimeError, r"nms: scores must be a 1-D"),
    ("nms-length-mismatch", lambda: ops.nms(B, S[:4], 0.5), RuntimeError, r"boxes and scores must have the same len"),
    (
        "nms-dtype-mismatch",
        lambda: ops.nms(B, S.double(), 0.5),
        RuntimeError,
        r"nms: boxes and scores must have the same dtype",
    ),
    (
        "nms-dtype-mismatch-half",
        lambda: ops.nms(B.half(), S, 0.5),
        RuntimeError,
        r"boxes and scores must have the same dtype",
    ),
    ("nms-int-boxes", lambda: ops.nms(B.long(), S.long(), 0.5), RuntimeError, r"nms: boxes must be a floating"),
    ("nms-int-boxes-float-scores", lambda: ops.nms(B.int(), S, 0.5), RuntimeError, r"boxes must be a floating"),
    ("nms-bool-boxes", lambda: ops.nms(B.bool(), S.bool(), 0.5), RuntimeError, r"boxes must be a floating"),
    ("nms-boxes-not-tensor", lambda: ops.nms(B.tolist(), S, 0.5), TypeError, r"nms: boxes must be a torch.Tensor"),
    ("nms-scores-not-tensor", lambda: ops.nms(B, S.tolist(), 0.5), TypeError, r"nms: scores must be a torch.Tensor"),
    ("nms-threshold-not-number", lambda: ops.nms(B, S, "high"), ValueError, r"high"),
    (
        "nms-scores-on-meta",
        lambda: ops.nms(B, S.to(META), 0.5),
        ValueError,
        r"boxes and scores must be on the same dev",
    ),
    ("nms-boxes-on-meta", lambda: ops.nms(B.to(META), S, 0.5), ValueError, r"boxes and scores must be on the same dev"),
    # raw op: the same checks live in the kernel
    ("raw-nms-boxes-5-cols", lambda: RAW.nms(torch.zeros(5, 5), S, 0.5), RuntimeError, r"nms: boxes .*4"),
    ("raw-nms-boxes-1d", lambda: RAW.nms(torch.zeros(20), S, 0.5), RuntimeError, r"nms: boxes must be a 2-D"),
    ("raw-nms-scores-2d", lambda: RAW.nms(B, S[:, None], 0.5), RuntimeError, r"scores must be a 1-D"),
    ("raw-nms-length-mismatch", lambda: RAW.nms(B, S[:3], 0.5), RuntimeError, r"same length"),
    ("raw-nms-dtype-mismatch", lambda: RAW.nms(B, S.double(), 0.5), RuntimeError, r"same dtype"),
    ("raw-nms-int-boxes", lambda: RAW.nms(B.long(), S.long(), 0.5), RuntimeError, r"boxes must be a floating"),
    # --- batched_nms -------------------------------------------------------------------------------------
    ("bnms-boxes-5-cols", lambda: ops.batched_nms(torch.zeros(5, 5), S, I, 0.5), RuntimeError, r"batched_nms: boxes"),
    ("bnms-boxes-1d", lambda: ops.batched_nms(torch.zeros(20), S, I, 0.5), RuntimeError, r"batched_nms: boxes"),
    ("bnms-scores-2d", lambda: ops.batched_nms(B, S[None], I, 0.5), RuntimeError, r"batched_nms: scores"),
    ("bnms-length-mismatch", lambda: ops.batched_nms(B, S[:4], I, 0.5), RuntimeError, r"same length"),
    ("bnms-dtype-mismatch", lambda: ops.batched_nms(B, S.double(), I, 0.5), RuntimeError, r"same dtype"),
    ("bnms-int-boxes", lambda: ops.batched_nms(B.long(), S.long(), I, 0.5), RuntimeError, r"boxes must be a floating"),
    (
        "bnms-float-idxs",
        lambda: ops.batched_nms(B, S, I.float(), 0.5),
        RuntimeError,
        r"batched_nms: idxs must be an int",
    ),
    ("bnms-bool-idxs", lambda: ops.batched_nms(B, S, I.bool(), 0.5), RuntimeError, r"idxs must be an integer"),
    ("bnms-idxs-short", lambda: ops.batched_nms(B, S, I[:4], 0.5), RuntimeError, r"batched_nms: idxs must be a 1-D"),
    ("bnms-idxs-long", lambda: ops.batched_nms(B, S, _idxs(6), 0.5), RuntimeError, r"idxs must be a 1-D"),
    ("bnms-idxs-2d", lambda: ops.batched_nms(B, S, I[:, None], 0.5), RuntimeError, r"idxs must be a 1-D"),
    ("bnms-idxs-not-tensor", lambda: ops.batched_nms(B, S, I.tolist(), 0.5), TypeError, r"idxs must be a torch.Tensor"),
    (
        "bnms-idxs-on-meta",
        lambda: ops.batched_nms(B, S, I.to(META), 0.5),
        ValueError,
        r"boxes and idxs must be on the same device",
    ),
    (
        "bnms-scores-on-meta",
        lambda: ops.batched_nms(B, S.to(META), I, 0.5),
        ValueError,
        r"boxes and scores must be on the same device",
    ),
    ("raw-bnms-float-idxs", lambda: RAW.batched_nms(B, S, I.float(), 0.5), RuntimeError, r"idxs must be an integer"),
    ("raw-bnms-idxs-short", lambda: RAW.batched_nms(B, S, I[:2], 0.5), RuntimeError, r"idxs must be a 1-D"),
]

OVERLAP = [
    ("box_iou", ops.box_iou, RAW.box_iou, ()),
    ("generalized_box_iou", ops.generalized_box_iou, RAW.generalized_box_iou, ()),
    ("distance_box_iou", ops.distance_box_iou, RAW.distance_box_iou, (1e-7,)),
    ("complete_box_iou", ops.complete_box_iou, RAW.complete_box_iou, (1e-7,)),
]

for name, fn, raw, extra in OVERLAP:
    CASES += [
        (f"{name}-boxes1-3-cols", lambda fn=fn: fn(torch.zeros(5, 3), B), RuntimeError, rf"{name}: boxes1 .*4"),
        (f"{name}-boxes2-3-cols", lambda fn=fn: fn(B, torch.zeros(5, 3)), RuntimeError, rf"{name}: boxes2 .*4"),
        (f"{name}-boxes1-5-cols", lambda fn=fn: fn(torch.zeros(2, 3, 5), B), RuntimeError, rf"{name}: boxes1"),
        (f"{name}-boxes1-1d", lambda fn=fn: fn(torch.zeros(4), B), RuntimeError, rf"{name}: boxes1 must have shape"),
        (f"{name}-boxes2-1d", lambda fn=fn: fn(B, torch.zeros(4)), RuntimeError, rf"{name}: boxes2 must have shape"),
        (
            f"{name}-no-broadcast",
            lambda fn=fn: fn(torch.zeros(2, 3, 4), torch.zeros(4, 3, 4)),
            RuntimeError,
            rf"{name}: the leading dimensions of boxes1 .* and boxes2 .* do not broadcast",
        ),
        (f"{name}-bool-boxes1", lambda fn=fn: fn(B.bool(), B), ValueError, rf"{name}: boxes1 must be a real"),
        (f"{name}-bool-boxes2", lambda fn=fn: fn(B, B.bool()), ValueError, rf"{name}: boxes2 must be a real"),
        (f"{name}-complex", lambda fn=fn: fn(B.to(torch.complex64), B), ValueError, rf"{name}: boxes1 must be a real"),
        (f"{name}-boxes1-list", lambda fn=fn: fn(B.tolist(), B), TypeError, rf"{name}: boxes1 must be a torch.Tensor"),
        (f"{name}-boxes2-none", lambda fn=fn: fn(B, None), TypeError, rf"{name}: boxes2 must be a torch.Tensor"),
        (
            f"{name}-boxes2-on-meta",
            lambda fn=fn: fn(B, B.to(META)),
            ValueError,
            rf"{name}: boxes1 and boxes2 must be on the same device",
        ),
        (
            f"raw-{name}-int-boxes",
            lambda raw=raw, extra=extra: raw(B.long(), B.long(), *extra),
            RuntimeError,
            rf"{name}: boxes1 must be a floating",
        ),
        (
            f"raw-{name}-3-cols",
            lambda raw=raw, extra=extra: raw(B, torch.zeros(2, 3), *extra),
            RuntimeError,
            rf"{name}: boxes2 .*4",
        ),
        (
            f"raw-{name}-no-broadcast",
            lambda raw=raw, extra=extra: raw(torch.zeros(2, 3, 4), torch.zeros(3, 3, 4), *extra),
            RuntimeError,
            r"do not broadcast",
        ),
    ]

CASES += [
    ("box_iou-fmt-bogus", lambda: ops.box_iou(B, B, fmt="bogus"), ValueError, r"box_iou: unsupported format 'bogus'"),
    ("box_iou-fmt-cxcywhr", lambda: ops.box_iou(B, B, fmt="cxcywhr"), NotImplementedError, r"cxcywhr"),
    ("box_iou-fmt-xywhr", lambda: ops.box_iou(B, B, fmt="xywhr"), NotImplementedError, r"xywhr"),
    ("box_iou-fmt-xyxyxyxy", lambda: ops.box_iou(B, B, fmt="xyxyxyxy"), NotImplementedError, r"xyxyxyxy"),
    ("box_area-fmt-bogus", lambda: ops.box_area(B, fmt="bogus"), ValueError, r"box_area: unsupported format 'bogus'"),
    ("box_convert-in-bogus", lambda: ops.box_convert(B, "bogus", "xyxy"), ValueError, r"in_fmt bogus"),
    ("box_convert-out-bogus", lambda: ops.box_convert(B, "xyxy", "bogus"), ValueError, r"out_fmt bogus"),
    ("box_convert-rotated", lambda: ops.box_convert(B, "cxcywhr", "xyxy"), NotImplementedError, r"cxcywhr"),
    ("box_convert-rotated-out", lambda: ops.box_convert(B, "xyxy", "xywhr"), NotImplementedError, r"xywhr"),
    (
        "set-capability-bogus",
        lambda: RAW._set_cpu_capability("sse4"),
        RuntimeError,
        r"capability must be one of 'default', 'avx2', 'avx512', got 'sse4'",
    ),
]


@pytest.mark.parametrize("call,exc,match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_case_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_valid_versions_of_the_bad_calls_work():
    # The table's inputs are only bad in the way each case says: the plain calls succeed.
    assert ops.nms(B, S, 0.5).dtype == torch.int64
    assert ops.batched_nms(B, S, I, 0.5).dtype == torch.int64
    for _, fn, raw, extra in OVERLAP:
        assert fn(B, B).shape == (5, 5)
        assert raw(B, B, *extra).shape == (5, 5)
    assert ops.box_iou(B, B, fmt="xywh").shape == (5, 5)
