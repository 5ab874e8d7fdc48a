"""patch_torchvision / unpatch_torchvision / torchvision_patched: what is rebound, that undoing the patch puts
the exact original objects back, idempotence, the context manager (nesting, exceptions), isinstance of
original instances while patched, and that nothing outside the listed modules changes.

Every test runs unpatched and leaves torchvision unpatched (the autouse fixture), whatever happens.
"""

import importlib
import sys

import pytest
import torch
import torchvision
import torchvision.models.detection  # noqa: F401  (imports every detection module)
from torch import nn

import pydet_ops
from pydet_ops import patch as patch_module

TARGET_MODULES = patch_module._TARGET_MODULES


def _module(name):
    return importlib.import_module(name)


@pytest.fixture(autouse=True)
def _always_unpatched():
    pydet_ops.unpatch_torchvision()
    assert not pydet_ops.torchvision_patched()
    try:
        yield
    finally:
        pydet_ops.unpatch_torchvision()


def _snapshot(module_names):
    return {name: dict(vars(_module(name))) for name in module_names}


def _changed(snapshot):
    """{module: [names whose value is not the same object, or that appeared or disappeared]}."""
    changes = {}
    for name, before in snapshot.items():
        now = vars(_module(name))
        diff = sorted(k for k in set(before) | set(now) if k not in before or k not in now or before[k] is not now[k])
        if diff:
            changes[name] = diff
    return changes


def _other_torchvision_modules():
    return sorted(
        name
        for name, module in list(sys.modules.items())
        if module is not None
        and (name == "torchvision" or name.startswith("torchvision."))
        and name not in TARGET_MODULES
    )


# Originals captured at import time (the suite runs unpatched).
# (``import torchvision.ops.roi_align as m`` would give the function: torchvision.ops re-exports it under the
# module's name.)
det_utils = _module("torchvision.models.detection._utils")
anchor_utils = _module("torchvision.models.detection.anchor_utils")
tv_boxes = _module("torchvision.ops.boxes")
tv_poolers = _module("torchvision.ops.poolers")
tv_roi_align_module = _module("torchvision.ops.roi_align")
tv_roi_pool_module = _module("torchvision.ops.roi_pool")

ORIGINAL = {
    "nms": tv_boxes.nms,
    "batched_nms": tv_boxes.batched_nms,
    "box_iou": tv_boxes.box_iou,
    "box_area": tv_boxes.box_area,
    "roi_align": tv_roi_align_module.roi_align,
    "RoIAlign": tv_roi_align_module.RoIAlign,
    "roi_pool": tv_roi_pool_module.roi_pool,
    "MultiScaleRoIAlign": tv_poolers.MultiScaleRoIAlign,
    "AnchorGenerator": anchor_utils.AnchorGenerator,
    "BoxCoder": det_utils.BoxCoder,
}

# (module, attribute, pydet_ops object it must be while patched)
EXPECTED_REBINDINGS = [
    ("torchvision.ops", "nms", pydet_ops.nms),
    ("torchvision.ops", "batched_nms", pydet_ops.batched_nms),
    ("torchvision.ops", "box_iou", pydet_ops.box_iou),
    ("torchvision.ops", "generalized_box_iou", pydet_ops.generalized_box_iou),
    ("torchvision.ops", "distance_box_iou", pydet_ops.distance_box_iou),
    ("torchvision.ops", "complete_box_iou", pydet_ops.complete_box_iou),
    ("torchvision.ops", "box_area", pydet_ops.box_area),
    ("torchvision.ops", "box_convert", pydet_ops.box_convert),
    ("torchvision.ops", "clip_boxes_to_image", pydet_ops.clip_boxes_to_image),
    ("torchvision.ops", "remove_small_boxes", pydet_ops.remove_small_boxes),
    ("torchvision.ops", "roi_align", pydet_ops.roi_align),
    ("torchvision.ops", "RoIAlign", pydet_ops.RoIAlign),
    ("torchvision.ops", "roi_pool", pydet_ops.roi_pool),
    ("torchvision.ops", "RoIPool", pydet_ops.RoIPool),
    ("torchvision.ops", "MultiScaleRoIAlign", pydet_ops.MultiScaleRoIAlign),
    ("torchvision.ops.boxes", "nms", pydet_ops.nms),
    ("torchvision.ops.boxes", "batched_nms", pydet_ops.batched_nms),
    ("torchvision.ops.boxes", "box_iou", pydet_ops.box_iou),
    ("torchvision.ops.boxes", "box_area", pydet_ops.box_area),
    ("torchvision.ops.boxes", "clip_boxes_to_image", pydet_ops.clip_boxes_to_image),
    ("torchvision.ops.boxes", "remove_small_boxes", pydet_ops.remove_small_boxes),
    ("torchvision.ops.roi_align", "roi_align", pydet_ops.roi_align),
    ("torchvision.ops.roi_align", "RoIAlign", pydet_ops.RoIAlign),
    ("torchvision.ops.roi_pool", "roi_pool", pydet_ops.roi_pool),
    ("torchvision.ops.roi_pool", "RoIPool", pydet_ops.RoIPool),
    ("torchvision.ops.poolers", "MultiScaleRoIAlign", pydet_ops.MultiScaleRoIAlign),
    ("torchvision.ops.poolers", "roi_align", pydet_ops.roi_align),
    ("torchvision.ops.poolers", "box_area", pydet_ops.box_area),
    ("torchvision.models.detection.rpn", "AnchorGenerator", pydet_ops.AnchorGenerator),
    ("torchvision.models.detection.roi_heads", "roi_align", pydet_ops.roi_align),
    ("torchvision.models.detection.anchor_utils", "AnchorGenerator", pydet_ops.AnchorGenerator),
    ("torchvision.models.detection._utils", "BoxCoder", pydet_ops.BoxCoder),
    ("torchvision.models.detection.retinanet", "AnchorGenerator", pydet_ops.AnchorGenerator),
    ("torchvision.models.detection.fcos", "AnchorGenerator", pydet_ops.AnchorGenerator),
    ("torchvision.models.detection.faster_rcnn", "AnchorGenerator", pydet_ops.AnchorGenerator),
    ("torchvision.models.detection.faster_rcnn", "MultiScaleRoIAlign", pydet_ops.MultiScaleRoIAlign),
    ("torchvision.models.detection.mask_rcnn", "MultiScaleRoIAlign", pydet_ops.MultiScaleRoIAlign),
    ("torchvision.models.detection.keypoint_rcnn", "MultiScaleRoIAlign", pydet_ops.MultiScaleRoIAlign),
]


# ---------------------------------------------------------------------------------------------------------
# What is rebound
# ---------------------------------------------------------------------------------------------------------


def test_expected_names_are_rebound_while_patched():
    before = {(m, a): getattr(_module(m), a) for m, a, _ in EXPECTED_REBINDINGS}
    for m, a, replacement in EXPECTED_REBINDINGS:
        assert before[(m, a)] is not replacement, (m, a)
        assert before[(m, a)].__module__.startswith("torchvision"), (m, a)
    pydet_ops.patch_torchvision()
    assert pydet_ops.torchvision_patched()
    for m, a, replacement in EXPECTED_REBINDINGS:
        assert getattr(_module(m), a) is replacement, (m, a)
    # Attribute access as user code writes it.
    assert torchvision.ops.nms is pydet_ops.nms
    assert torchvision.ops.boxes.batched_nms is pydet_ops.batched_nms
    assert torchvision.ops.roi_align is pydet_ops.roi_align
    assert torchvision.ops.poolers.MultiScaleRoIAlign is pydet_ops.MultiScaleRoIAlign
    assert torchvision.models.detection.rpn.AnchorGenerator is pydet_ops.AnchorGenerator
    assert torchvision.models.detection._utils.BoxCoder is pydet_ops.BoxCoder
    assert torchvision.models.detection.roi_heads.roi_align is pydet_ops.roi_align
    assert torchvision.models.detection.faster_rcnn.MultiScaleRoIAlign is pydet_ops.MultiScaleRoIAlign
    pydet_ops.unpatch_torchvision()
    for (m, a), value in before.items():
        assert getattr(_module(m), a) is value, (m, a)


def test_every_reference_to_an_original_is_rebound_and_nothing_else():
    originals = {id(v): v for v in ORIGINAL.values()}
    snapshot = _snapshot(TARGET_MODULES)
    pydet_ops.patch_torchvision()
    for module_name, before in snapshot.items():
        now = vars(_module(module_name))
        assert set(now) == set(before), module_name
        for name, value in before.items():
            if name in {a for m, a, _ in EXPECTED_REBINDINGS if m == module_name}:
                assert now[name] is not value, (module_name, name)
                assert getattr(now[name], "__module__", "").startswith("pydet_ops"), (module_name, name)
            elif id(value) in originals and originals[id(value)] is value:
                # Any other alias of a replaced original is rebound too (to the same replacement).
                assert now[name] is not value, (module_name, name)
            elif now[name] is not value:
                # Whatever else changed must be one of torchvision's box / RoI ops, replaced by ours.
                assert getattr(now[name], "__module__", "").startswith("pydet_ops"), (module_name, name)
                assert getattr(value, "__module__", "").startswith("torchvision"), (module_name, name)
                assert getattr(now[name], "__name__", None) == getattr(value, "__name__", None), (module_name, name)


def test_unpatch_restores_the_exact_original_objects():
    snapshot = _snapshot(TARGET_MODULES)
    pydet_ops.patch_torchvision()
    changes = _changed(snapshot)
    assert changes, "patch_torchvision() changed nothing"
    assert set(changes) >= {"torchvision.ops", "torchvision.ops.boxes", "torchvision.models.detection.anchor_utils"}
    pydet_ops.unpatch_torchvision()
    assert _changed(snapshot) == {}
    for name, original in ORIGINAL.items():
        assert original.__module__.startswith("torchvision"), name
    assert anchor_utils.AnchorGenerator is ORIGINAL["AnchorGenerator"]
    assert det_utils.BoxCoder is ORIGINAL["BoxCoder"]
    assert torchvision.ops.nms is ORIGINAL["nms"]
    assert torchvision.ops.roi_align is ORIGINAL["roi_align"]
    # The pydet_ops classes no longer stand in for torchvision's.
    for cls in (pydet_ops.AnchorGenerator, pydet_ops.MultiScaleRoIAlign, pydet_ops.BoxCoder, pydet_ops.RoIAlign):
        assert "_stands_in_for" not in cls.__dict__, cls


def test_repeated_patch_unpatch_cycles():
    snapshot = _snapshot(TARGET_MODULES)
    for _ in range(3):
        pydet_ops.patch_torchvision()
        assert torchvision.ops.nms is pydet_ops.nms
        pydet_ops.unpatch_torchvision()
        assert _changed(snapshot) == {}


def test_unpatch_when_not_patched_does_nothing():
    snapshot = _snapshot(TARGET_MODULES)
    pydet_ops.unpatch_torchvision()
    pydet_ops.unpatch_torchvision()
    assert _changed(snapshot) == {}
    assert not pydet_ops.torchvision_patched()


def test_nothing_outside_the_listed_modules_changes():
    others = _other_torchvision_modules()
    assert "torchvision.ops.misc" in others and "torchvision.models.detection.transform" in others
    assert "torchvision.models.detection" in others and "torchvision.models.detection.image_list" in others
    snapshot = _snapshot(others)
    pydet_ops_snapshot = _snapshot(["pydet_ops", "pydet_ops.anchors", "pydet_ops.box_coder", "pydet_ops.boxes"])
    with pydet_ops.patch_torchvision():
        assert _changed(snapshot) == {}
        assert _changed(pydet_ops_snapshot) == {}
    assert _changed(snapshot) == {}
    assert _changed(pydet_ops_snapshot) == {}


# ---------------------------------------------------------------------------------------------------------
# Idempotence, context manager, flag
# ---------------------------------------------------------------------------------------------------------


def test_second_patch_is_a_no_op_and_its_handle_does_not_unpatch():
    snapshot = _snapshot(TARGET_MODULES)
    first = pydet_ops.patch_torchvision()
    patched = _snapshot(TARGET_MODULES)
    second = pydet_ops.patch_torchvision()
    assert _changed(patched) == {}
    assert pydet_ops.torchvision_patched()
    with second:
        pass
    assert pydet_ops.torchvision_patched()
    assert _changed(patched) == {}
    second.__exit__(None, None, None)
    assert pydet_ops.torchvision_patched() and torchvision.ops.nms is pydet_ops.nms
    with first:
        pass
    assert not pydet_ops.torchvision_patched()
    assert _changed(snapshot) == {}


def test_context_manager_restores_on_exit():
    snapshot = _snapshot(TARGET_MODULES)
    assert not pydet_ops.torchvision_patched()
    with pydet_ops.patch_torchvision() as handle:
        assert handle is not None
        assert pydet_ops.torchvision_patched()
        assert torchvision.ops.nms is pydet_ops.nms
    assert not pydet_ops.torchvision_patched()
    assert _changed(snapshot) == {}


def test_context_manager_restores_when_the_block_raises():
    snapshot = _snapshot(TARGET_MODULES)

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with pydet_ops.patch_torchvision():
            assert torchvision.ops.nms is pydet_ops.nms
            raise Boom()
    assert not pydet_ops.torchvision_patched()
    assert _changed(snapshot) == {}
    assert torchvision.ops.nms is ORIGINAL["nms"]


def test_nested_context_managers():
    snapshot = _snapshot(TARGET_MODULES)
    with pydet_ops.patch_torchvision():
        patched = _snapshot(TARGET_MODULES)
        with pydet_ops.patch_torchvision():
            assert _changed(patched) == {}
            with pydet_ops.patch_torchvision():
                assert pydet_ops.torchvision_patched()
            assert pydet_ops.torchvision_patched()
            assert _changed(patched) == {}
        # The inner blocks did not undo the outer patch.
        assert pydet_ops.torchvision_patched()
        assert torchvision.models.detection.anchor_utils.AnchorGenerator is pydet_ops.AnchorGenerator
    assert not pydet_ops.torchvision_patched()
    assert _changed(snapshot) == {}


def test_nested_inner_raises():
    snapshot = _snapshot(TARGET_MODULES)
    with pydet_ops.patch_torchvision():
        with pytest.raises(RuntimeError, match="inner"):
            with pydet_ops.patch_torchvision():
                raise RuntimeError("inner")
        assert pydet_ops.torchvision_patched()
    assert _changed(snapshot) == {}


def test_context_manager_inside_a_global_patch_leaves_it_in_force():
    pydet_ops.patch_torchvision()
    with pydet_ops.patch_torchvision():
        pass
    assert pydet_ops.torchvision_patched()
    assert torchvision.ops.roi_align is pydet_ops.roi_align


def test_torchvision_patched_flag():
    assert pydet_ops.torchvision_patched() is False
    handle = pydet_ops.patch_torchvision()
    assert pydet_ops.torchvision_patched() is True
    pydet_ops.unpatch_torchvision()
    assert pydet_ops.torchvision_patched() is False
    # A handle whose patch was already undone does not patch or unpatch again on exit.
    with handle:
        pass
    assert pydet_ops.torchvision_patched() is False
    pydet_ops.patch_torchvision()
    handle.__exit__(None, None, None)
    assert pydet_ops.torchvision_patched() is True


# ---------------------------------------------------------------------------------------------------------
# isinstance, models
# ---------------------------------------------------------------------------------------------------------


class _TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 8, kernel_size=3, stride=16, padding=1)
        self.out_channels = 8

    def forward(self, x):
        return self.body(x)


def test_original_instances_pass_isinstance_only_while_patched():
    original_anchor = ORIGINAL["AnchorGenerator"](((32, 64),), ((0.5, 1.0, 2.0),))
    original_pooler = ORIGINAL["MultiScaleRoIAlign"](["0"], 7, 2)
    assert not isinstance(original_anchor, pydet_ops.AnchorGenerator)
    assert not isinstance(original_pooler, pydet_ops.MultiScaleRoIAlign)
    with pydet_ops.patch_torchvision():
        assert isinstance(original_anchor, torchvision.models.detection.anchor_utils.AnchorGenerator)
        assert isinstance(original_anchor, torchvision.models.detection.faster_rcnn.AnchorGenerator)
        assert isinstance(original_anchor, pydet_ops.AnchorGenerator)
        assert isinstance(original_pooler, torchvision.ops.MultiScaleRoIAlign)
        # Unrelated objects do not pass.
        assert not isinstance(nn.Linear(2, 2), pydet_ops.AnchorGenerator)
        assert not isinstance(original_pooler, pydet_ops.AnchorGenerator)
        # Our own instances still do.
        assert isinstance(pydet_ops.AnchorGenerator(), pydet_ops.AnchorGenerator)
    assert not isinstance(original_anchor, pydet_ops.AnchorGenerator)
    assert not isinstance(original_pooler, pydet_ops.MultiScaleRoIAlign)
    assert isinstance(original_anchor, anchor_utils.AnchorGenerator)


def test_faster_rcnn_accepts_original_instances_while_patched():
    from torchvision.models.detection.faster_rcnn import FasterRCNN

    original_anchor = ORIGINAL["AnchorGenerator"](((32, 64, 128),), ((0.5, 1.0, 2.0),))
    original_pooler = ORIGINAL["MultiScaleRoIAlign"](["0"], 7, 2)
    with pydet_ops.patch_torchvision():
        model = FasterRCNN(
            _TinyBackbone(),
            num_classes=3,
            rpn_anchor_generator=original_anchor,
            box_roi_pool=original_pooler,
            min_size=64,
            max_size=96,
        )
        assert model.rpn.anchor_generator is original_anchor
        assert model.roi_heads.box_roi_pool is original_pooler
        # It runs (its inner ops go through the patched names).
        model.eval()
        with torch.no_grad():
            out = model([torch.rand(3, 64, 80, generator=torch.Generator().manual_seed(0))])
        assert out[0]["boxes"].shape[-1] == 4
    # Unpatched again: torchvision checks against its own classes, and our instances no longer pass them.
    FasterRCNN(_TinyBackbone(), num_classes=3, rpn_anchor_generator=original_anchor, box_roi_pool=original_pooler)
    with pytest.raises(TypeError, match="rpn_anchor_generator"):
        FasterRCNN(_TinyBackbone(), num_classes=3, rpn_anchor_generator=pydet_ops.AnchorGenerator())
    with pytest.raises(TypeError, match="rpn_anchor_generator"):
        FasterRCNN(_TinyBackbone(), num_classes=3, rpn_anchor_generator=nn.Identity())


def test_models_built_while_patched_use_pydet_ops():
    from torchvision.models.detection.faster_rcnn import FasterRCNN

    with pydet_ops.patch_torchvision():
        model = FasterRCNN(_TinyBackbone(), num_classes=3, min_size=64, max_size=96)
    assert type(model.rpn.anchor_generator) is pydet_ops.AnchorGenerator
    assert type(model.roi_heads.box_roi_pool) is pydet_ops.MultiScaleRoIAlign
    assert type(model.rpn.box_coder) is pydet_ops.BoxCoder
    assert type(model.roi_heads.box_coder) is pydet_ops.BoxCoder
    unpatched = FasterRCNN(_TinyBackbone(), num_classes=3, min_size=64, max_size=96)
    assert type(unpatched.rpn.anchor_generator) is ORIGINAL["AnchorGenerator"]
    assert type(unpatched.rpn.box_coder) is ORIGINAL["BoxCoder"]


def test_patched_ops_give_torchvision_results():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=g) * 40], dim=1)
    scores = torch.rand(60, generator=g)
    idxs = torch.randint(0, 3, (60,), generator=g)
    expected_keep = ORIGINAL["nms"](boxes, scores, 0.5)
    expected_batched = ORIGINAL["batched_nms"](boxes, scores, idxs, 0.5)
    with pydet_ops.patch_torchvision():
        assert torch.equal(torchvision.ops.nms(boxes, scores, 0.5), expected_keep)
        assert torch.equal(torchvision.ops.boxes.batched_nms(boxes, scores, idxs, 0.5), expected_batched)
        anchors = torchvision.models.detection.rpn.AnchorGenerator(((32,),), ((1.0, 2.0),))
        assert isinstance(anchors, pydet_ops.AnchorGenerator)
