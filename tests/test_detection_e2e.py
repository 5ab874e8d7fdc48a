"""End-to-end equivalence: torchvision's detectors give the same detections and losses with and without
pydet_ops.patch_torchvision().

Each model is built once (random weights, fixed seed), then again while patched with the same state dict;
both run the same images in eval mode and the same images and targets in training mode (the RNG is reset
before each run so the samplers draw the same boxes). Score thresholds are lowered to 0 so that the
comparison covers a full set of detections rather than the few that pass the default threshold with random
weights.

SSDlite's random initialisation (normal, std 0.03, through the whole backbone) makes its features vanish
(~1e-14), so every score ties and which tied box torchvision keeps is up to its sort; its convolutions are
re-initialised (seeded, Kaiming normal) so that the comparison means something.
"""

import contextlib

import pytest
import torch
from torch import nn
from torchvision.models import detection

import pydet_ops

BOX_ATOL = 1e-4
SCORE_ATOL = 1e-5

# builder, keyword arguments (small images where the model allows it), whether targets need masks.
MODELS = {
    "fasterrcnn_resnet50_fpn": (
        detection.fasterrcnn_resnet50_fpn,
        dict(min_size=320, max_size=480, box_score_thresh=0.0),
        False,
    ),
    "maskrcnn_resnet50_fpn": (
        detection.maskrcnn_resnet50_fpn,
        dict(min_size=320, max_size=480, box_score_thresh=0.0, box_detections_per_img=50),
        True,
    ),
    "retinanet_resnet50_fpn": (
        detection.retinanet_resnet50_fpn,
        dict(min_size=320, max_size=480, score_thresh=0.0),
        False,
    ),
    "ssdlite320_mobilenet_v3_large": (
        detection.ssdlite320_mobilenet_v3_large,
        dict(score_thresh=0.0, detections_per_img=100),
        False,
    ),
}


def _images():
    g = torch.Generator().manual_seed(7)
    return [torch.rand(3, 300, 400, generator=g), torch.rand(3, 340, 290, generator=g)]


def _targets(images, with_masks):
    g = torch.Generator().manual_seed(11)
    targets = []
    for img in images:
        h, w = img.shape[-2:]
        n = 4
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 20 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])
        boxes = torch.cat([xy, xy + wh], dim=1)
        t = {"boxes": boxes, "labels": torch.randint(1, 91, (n,), generator=g)}
        if with_masks:
            masks = torch.zeros(n, h, w, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
                masks[i, y1:y2, x1:x2] = 1
            t["masks"] = masks
        targets.append(t)
    return targets


def _reinit_convs(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")


def _build(name, patched, state=None):
    builder, kwargs, _ = MODELS[name]
    torch.manual_seed(0)
    with pydet_ops.patch_torchvision() if patched else contextlib.nullcontext():
        model = builder(weights=None, weights_backbone=None, **kwargs)
    if name.startswith("ssdlite"):
        _reinit_convs(model)
    if state is not None:
        model.load_state_dict(state)
    return model


def _run(model, patched, images, targets=None):
    with pydet_ops.patch_torchvision() if patched else contextlib.nullcontext():
        torch.manual_seed(1)
        if targets is None:
            model.eval()
            with torch.no_grad():
                return model(images)
        model.train()
        return model(images, targets)


def _pydet_parts(model):
    """How many of the model's modules and box coders are pydet_ops', and how many box coders it has."""
    parts = list(model.modules()) + [m.box_coder for m in model.modules() if hasattr(m, "box_coder")]
    ours = sum(type(p).__module__.startswith("pydet_ops") for p in parts)
    return ours, sum(hasattr(m, "box_coder") for m in model.modules())


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(name):
        if name not in cache:
            reference = _build(name, patched=False)
            patched = _build(name, patched=True, state=reference.state_dict())
            cache[name] = (reference, patched)
        return cache[name]

    return get


@pytest.mark.parametrize("name", list(MODELS))
def test_detections_match(built, name):
    reference, patched = built(name)
    assert not pydet_ops.torchvision_patched()
    ours, coders = _pydet_parts(patched)
    assert coders >= 1 and ours >= coders
    assert _pydet_parts(reference)[0] == 0
    images = _images()
    expected = _run(reference, False, images)
    got = _run(patched, True, images)
    assert not pydet_ops.torchvision_patched()
    assert len(expected) == len(got) == len(images)
    total = 0
    for e, o in zip(expected, got):
        assert e.keys() == o.keys()
        assert e["boxes"].shape == o["boxes"].shape
        total += e["boxes"].shape[0]
        # Distinct scores: the order of the detections is defined by the data, not by how ties are broken.
        assert e["scores"].unique().numel() > e["scores"].numel() // 2
        torch.testing.assert_close(o["boxes"], e["boxes"], rtol=0, atol=BOX_ATOL)
        torch.testing.assert_close(o["scores"], e["scores"], rtol=0, atol=SCORE_ATOL)
        assert torch.equal(o["labels"], e["labels"])
        if "masks" in e:
            torch.testing.assert_close(o["masks"], e["masks"], rtol=0, atol=1e-4)
    # A full comparison, not two empty lists.
    assert total >= 2 * 40


@pytest.mark.parametrize("name", list(MODELS))
def test_training_losses_match(built, name):
    reference, patched = built(name)
    images = _images()
    targets = _targets(images, with_masks=MODELS[name][2])
    expected = _run(reference, False, images, targets)
    got = _run(patched, True, images, targets)
    assert expected.keys() == got.keys() and len(expected) >= 2
    for key in expected:
        assert torch.isfinite(expected[key]), key
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    # The patched losses are differentiable end to end (through the RoI ops' backward).
    sum(got.values()).backward()
    grads = [p.grad for p in patched.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
