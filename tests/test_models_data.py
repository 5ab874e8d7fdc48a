"""Tests for models.data: the synthetic shapes dataset, COCO export/loading, batching and flipping."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from models.data import (
    CLASSES,
    CocoDetection,
    RandomHorizontalFlip,
    ShapesConfig,
    ShapesDataset,
    collate_fn,
    export_coco,
    horizontal_flip,
)

# pycocotools' RLE decoding triggers a NumPy 2 deprecation warning inside the library itself.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

SMALL = ShapesConfig(num_images=8, image_size=64, min_objects=1, max_objects=4, min_size=12, max_size=32, seed=3)


@pytest.fixture(scope="module")
def dataset():
    return ShapesDataset(SMALL)


@pytest.fixture(scope="module")
def items(dataset):
    return [dataset[i] for i in range(len(dataset))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, dataset):
    root = tmp_path_factory.mktemp("shapes_coco")
    ann_path = export_coco(dataset, root, split_name="train")
    return root, ann_path


def assert_same_item(a, b):
    image_a, target_a = a
    image_b, target_b = b
    assert torch.equal(image_a, image_b)
    assert target_a.keys() == target_b.keys()
    for key, value in target_a.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, target_b[key]), key
        else:
            assert value == target_b[key], key


def mask_box(mask):
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)


# --------------------------------------------------------------------------------------------------------
# ShapesDataset


def test_same_seed_gives_identical_data(items):
    again = ShapesDataset(SMALL)
    for i, item in enumerate(items):
        assert_same_item(item, again[i])


def test_different_seed_gives_different_data(items):
    other = ShapesDataset(dataclasses.replace(SMALL, seed=SMALL.seed + 1))
    for i, (image, _) in enumerate(items):
        assert not torch.equal(image, other[i][0])


def test_item_does_not_depend_on_access_order(items):
    fresh = ShapesDataset(SMALL)
    first = fresh[5]
    for i in reversed(range(len(fresh))):
        fresh[i]
    assert_same_item(first, fresh[5])
    assert_same_item(first, items[5])
    assert_same_item(fresh[-3], items[5])


def test_target_fields_have_expected_shapes_and_dtypes(items):
    height, width = SMALL.height_width
    for i, (image, target) in enumerate(items):
        n = len(target["labels"])
        assert image.dtype == torch.float32 and image.shape == (3, height, width)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (n, 4)
        assert target["labels"].dtype == torch.int64 and target["labels"].shape == (n,)
        assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (n, height, width)
        assert target["area"].dtype == torch.float32 and target["area"].shape == (n,)
        assert target["iscrowd"].dtype == torch.int64
        assert torch.equal(target["iscrowd"], torch.zeros(n, dtype=torch.int64))
        assert target["image_id"] == i + 1


def test_boxes_are_tight_around_visible_masks_and_inside_image(items):
    height, width = SMALL.height_width
    for _, target in items:
        for box, mask in zip(target["boxes"], target["masks"]):
            assert torch.equal(box, mask_box(mask))
            x1, y1, x2, y2 = box.tolist()
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert x2 - x1 >= 4 and y2 - y1 >= 4


def test_area_labels_counts_and_disjoint_masks(items):
    labels_seen = set()
    for _, target in items:
        masks = target["masks"]
        assert torch.equal(target["area"], masks.sum(dim=(1, 2)).float())
        assert ((target["labels"] >= 1) & (target["labels"] <= len(CLASSES))).all()
        assert SMALL.min_objects <= len(target["labels"]) <= SMALL.max_objects
        assert masks.sum(dim=0).max() <= 1, "visible masks overlap"
        labels_seen.update(target["labels"].tolist())
    assert labels_seen == {1, 2, 3}


def test_masks_match_drawn_pixels(items):
    # Objects are solid colours under mild noise: a mask that strayed onto the background or another object
    # would mix colours and raise the spread of its pixels.
    for image, target in items:
        for mask in target["masks"].bool():
            pixels = image[:, mask]
            assert pixels.std(dim=1).max() < 0.05


def rectangle_fill(dataset):
    """Visible fraction of the box of every rectangle in ``dataset`` (1 when nothing hides it)."""
    fractions = []
    for _, target in dataset:
        for box, area, label in zip(target["boxes"], target["area"], target["labels"]):
            if label == CLASSES.index("rectangle") + 1:
                fractions.append(float(area) / float((box[2] - box[0]) * (box[3] - box[1])))
    return fractions


def test_max_overlap_controls_hiding():
    crowded = {"num_images": 6, "image_size": 64, "min_objects": 4, "max_objects": 6, "min_size": 12, "max_size": 32}
    hidden = rectangle_fill(ShapesDataset(ShapesConfig(**crowded, max_overlap=0.5)))
    assert hidden and min(hidden) < 1.0, "objects never overlap"
    assert min(hidden) >= 0.5 - 1e-6
    separate = ShapesDataset(ShapesConfig(**crowded, max_overlap=0.0))
    assert rectangle_fill(separate) and min(rectangle_fill(separate)) == 1.0
    for _, target in separate:
        assert len(target["labels"]) <= 6


def test_rectangular_image_size_and_length():
    dataset = ShapesDataset(ShapesConfig(num_images=3, image_size=(40, 72), min_size=8, max_size=24))
    assert len(dataset) == 3
    image, target = dataset[2]
    assert image.shape == (3, 40, 72) and target["masks"].shape[1:] == (40, 72)
    with pytest.raises(IndexError):
        dataset[3]


@pytest.mark.parametrize(
    "changes",
    [
        {"min_objects": 3, "max_objects": 2},
        {"min_size": 2},
        {"min_size": 40, "max_size": 30},
        {"min_size": 80, "max_size": 90},
        {"max_overlap": 1.5},
        {"image_size": 0},
        {"seed": -1},
    ],
)
def test_invalid_config_is_rejected(changes):
    with pytest.raises(ValueError):
        dataclasses.replace(SMALL, **changes)


# --------------------------------------------------------------------------------------------------------
# COCO export and loading


def test_export_writes_loadable_coco(exported, items, dataset):
    root, ann_path = exported
    assert ann_path == root / "annotations.json"
    assert sorted(p.name for p in (root / "images").iterdir()) == [f"{i:06d}.png" for i in range(1, 9)]
    coco = COCO(str(ann_path))
    assert sorted(coco.getImgIds()) == list(range(1, 9))
    assert [coco.cats[i]["name"] for i in (1, 2, 3)] == list(CLASSES)
    assert {c["supercategory"] for c in coco.cats.values()} == {"shape"}
    assert len(coco.anns) == sum(len(t["labels"]) for _, t in items)
    for ann in coco.anns.values():
        assert isinstance(ann["segmentation"]["counts"], str)
        assert np.allclose(mask_utils.toBbox(ann["segmentation"]), ann["bbox"])
        assert mask_utils.area(ann["segmentation"]) == ann["area"]
    info = json.loads(ann_path.read_text())["info"]
    assert info["split"] == "train"
    assert info["generator"]["seed"] == SMALL.seed and info["generator"]["num_images"] == SMALL.num_images


def test_round_trip_through_coco_folder(exported, items):
    root, _ = exported
    loaded = CocoDetection(root, with_masks=True)
    assert len(loaded) == len(items)
    assert loaded.classes == CLASSES
    assert loaded.cat_id_to_label == {1: 1, 2: 2, 3: 3} and loaded.label_to_cat_id == {1: 1, 2: 2, 3: 3}
    assert loaded.ids == list(range(1, 9))
    for (image, target), (image2, target2) in zip(items, loaded):
        assert image2.dtype == torch.float32 and image2.shape == image.shape
        assert (image2 - image).abs().max() <= 1 / 255 + 1e-6
        for key in ("boxes", "labels", "masks", "area", "iscrowd"):
            assert target2[key].dtype == target[key].dtype, key
            assert torch.equal(target2[key], target[key]), key
        assert target2["image_id"] == target["image_id"]


def test_loader_without_masks_and_with_transform(exported, items):
    root, ann_path = exported
    loaded = CocoDetection(root, ann_path, transforms=RandomHorizontalFlip(p=1.0))
    image, target = loaded[0]
    assert "masks" not in target
    expected_image, expected_target = horizontal_flip(*items[0])
    assert (image - expected_image).abs().max() <= 1 / 255 + 1e-6
    assert torch.equal(target["boxes"], expected_target["boxes"])


def uncompressed_rle(mask):
    """COCO's uncompressed RLE counts of a binary mask: run lengths in column-major order, zeros first."""
    flat = mask.flatten(order="F")
    bounds = np.r_[0, np.flatnonzero(np.diff(flat)) + 1, flat.size]
    counts = np.diff(bounds).tolist()
    return [0] + counts if flat[0] else counts


def test_loader_reads_foreign_coco_files(tmp_path):
    # Images directly under root, grayscale and RGBA, sparse category ids, polygons, crowd RLE, a bad box.
    Image.fromarray(np.full((20, 30), 128, dtype=np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(np.zeros((10, 12, 4), dtype=np.uint8)).save(tmp_path / "rgba.png")
    crowd = np.zeros((20, 30), dtype=np.uint8)
    crowd[5:10, 2:8] = 1
    data = {
        "images": [
            {"id": 7, "file_name": "gray.png", "height": 20, "width": 30},
            {"id": 3, "file_name": "rgba.png", "height": 10, "width": 12},
        ],
        "categories": [{"id": 17, "name": "dog"}, {"id": 5, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 17, "bbox": [10, 2, 4, 6], "area": 24, "iscrowd": 0,
             "segmentation": [[10, 2, 14, 2, 14, 8, 10, 8]]},
            {"id": 2, "image_id": 7, "category_id": 5, "bbox": [2, 5, 6, 5], "area": 30, "iscrowd": 1,
             "segmentation": {"size": [20, 30], "counts": uncompressed_rle(crowd)}},
            {"id": 3, "image_id": 7, "category_id": 5, "bbox": [1, 1, 0, 4], "area": 0, "iscrowd": 0,
             "segmentation": []},
        ],
    }
    (tmp_path / "instances.json").write_text(json.dumps(data))
    loaded = CocoDetection(tmp_path, tmp_path / "instances.json", with_masks=True)
    assert loaded.ids == [3, 7]
    assert loaded.classes == ("cat", "dog")
    assert loaded.cat_id_to_label == {5: 1, 17: 2} and loaded.label_to_cat_id == {1: 5, 2: 17}

    image, target = loaded[0]
    assert image.shape == (3, 10, 12) and target["boxes"].shape == (0, 4) and target["masks"].shape == (0, 10, 12)

    image, target = loaded[1]
    assert image.shape == (3, 20, 30) and torch.allclose(image, torch.full_like(image, 128 / 255))
    assert target["image_id"] == 7
    assert target["boxes"].tolist() == [[10, 2, 14, 8], [2, 5, 8, 10]]
    assert target["labels"].tolist() == [2, 1]
    assert target["iscrowd"].tolist() == [0, 1]
    assert torch.equal(target["masks"][1], torch.from_numpy(crowd))
    assert target["masks"][0].sum() > 0 and torch.equal(mask_box(target["masks"][0]), target["boxes"][0])


def test_loader_errors_name_the_missing_path(tmp_path, exported):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        CocoDetection(missing)
    with pytest.raises(FileNotFoundError, match="annotations.json"):
        CocoDetection(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        CocoDetection(tmp_path, tmp_path / "broken.json")
    (tmp_path / "partial.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="partial.json"):
        CocoDetection(tmp_path, tmp_path / "partial.json")
    # The exported annotations, read from a folder without the images.
    _, ann_path = exported
    with pytest.raises(FileNotFoundError, match="000001.png"):
        CocoDetection(tmp_path, ann_path)[0]


def test_collate_fn_with_data_loader(dataset):
    loader = DataLoader(dataset, batch_size=3, collate_fn=collate_fn)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and isinstance(targets, list)
    assert len(images) == len(targets) == 3
    assert [t["image_id"] for t in targets] == [1, 2, 3]


# --------------------------------------------------------------------------------------------------------
# Flipping


def test_flip_twice_is_identity_and_boxes_follow_masks(items):
    for image, target in items:
        boxes_before = target["boxes"].clone()
        flipped_image, flipped = horizontal_flip(image, target)
        assert torch.equal(target["boxes"], boxes_before), "input target was modified"
        assert torch.equal(flipped_image, image.flip(-1))
        for box, mask in zip(flipped["boxes"], flipped["masks"]):
            assert torch.equal(box, mask_box(mask))
        back_image, back = horizontal_flip(flipped_image, flipped)
        assert torch.equal(back_image, image)
        for key in ("boxes", "masks", "labels", "area"):
            assert torch.equal(back[key], target[key])


def test_random_flip_probability_and_reproducibility(items):
    image, target = items[0]
    assert RandomHorizontalFlip(p=0.0)(image, target)[0] is image
    assert torch.equal(RandomHorizontalFlip(p=1.0)(image, target)[0], image.flip(-1))

    def draws(seed):
        flip = RandomHorizontalFlip(p=0.5, generator=torch.Generator().manual_seed(seed))
        return [not torch.equal(flip(image, target)[0], image) for _ in range(32)]

    assert draws(0) == draws(0)
    assert 0 < sum(draws(0)) < 32
    with pytest.raises(ValueError):
        RandomHorizontalFlip(p=1.5)
