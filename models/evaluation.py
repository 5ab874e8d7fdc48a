"""COCO-style evaluation of a detector with pycocotools: mAP@[.5:.95], mAP@.5, mAP@.75 and per-class AP."""

from __future__ import annotations

import contextlib
import io
import time
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torch.utils.data import DataLoader, Dataset

from .data import collate_fn


def coco_ground_truth(dataset: Dataset, samples: Optional[Iterable[Tuple[Tuple[int, int], Dict]]] = None) -> COCO:
    """The dataset's ground truth as a pycocotools COCO object: its own (`dataset.coco`, for COCO folders),
    or built from its targets (synthetic data; category ids are the labels 1..K). `samples`, ((height,
    width), target) per image, saves reading the dataset again when the caller already has them."""
    if hasattr(dataset, "coco"):
        return dataset.coco
    if samples is None:
        samples = (((int(im.shape[1]), int(im.shape[2])), t) for im, t in (dataset[i] for i in range(len(dataset))))
    images, annotations = [], []
    for (height, width), target in samples:
        image_id = int(target["image_id"])
        images.append({"id": image_id, "height": height, "width": width})
        boxes = target["boxes"].tolist()
        areas = target["area"].tolist() if "area" in target else [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
        crowd = target["iscrowd"].tolist() if "iscrowd" in target else [0] * len(boxes)
        for box, label, area, iscrowd in zip(boxes, target["labels"].tolist(), areas, crowd):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "area": float(area),
                "iscrowd": int(iscrowd),
            })
    names = list(getattr(dataset, "classes", []))
    categories = [{"id": i + 1, "name": name, "supercategory": "object"} for i, name in enumerate(names)]
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations, "categories": categories}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def label_to_category(dataset: Dataset) -> Callable[[int], int]:
    mapping = getattr(dataset, "label_to_cat_id", None)
    return (lambda label: int(mapping[label])) if mapping else (lambda label: int(label))


@torch.no_grad()
def predict_dataset(model: torch.nn.Module, dataset: Dataset, batch_size: int = 8, device: str = "cpu",
                    progress: Optional[Callable[[int, int], None]] = None,
                    samples: Optional[List[Tuple[Tuple[int, int], Dict]]] = None) -> List[Dict]:
    """Detections of `model` on every image, as COCO result dicts (image_id, category_id, bbox xywh, score).
    When `samples` is a list, ((height, width), target) of every image is appended to it."""
    model.eval()
    to_category = label_to_category(dataset)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    results: List[Dict] = []
    done = 0
    for images, targets in loader:
        outputs = model([im.to(device) for im in images])
        for image, target, out in zip(images, targets, outputs):
            if samples is not None:
                samples.append(((int(image.shape[1]), int(image.shape[2])), target))
            image_id = int(target["image_id"])
            for box, score, label in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist()):
                results.append({
                    "image_id": image_id, "category_id": to_category(label),
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": float(score),
                })
        done += len(images)
        if progress is not None:
            progress(done, len(dataset))
    return results


def coco_metrics(ground_truth: COCO, results: List[Dict]) -> Dict:
    """pycocotools' bbox evaluation of `results` against `ground_truth`: the summary numbers and per-class
    AP@[.5:.95] / AP@.5 (classes without ground truth left out)."""
    categories = ground_truth.loadCats(ground_truth.getCatIds())
    empty = {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0,
             "per_class": {c["name"]: {"AP": 0.0, "AP50": 0.0} for c in categories}, "summary": ""}
    if not results:
        return empty
    with contextlib.redirect_stdout(io.StringIO()):
        detections = ground_truth.loadRes(results)
    evaluator = COCOeval(ground_truth, detections, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluator.summarize()
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall points, categories, areas, max dets]
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        name = ground_truth.loadCats(int(cat_id))[0]["name"]
        p_all = precision[:, :, k, 0, -1]
        p_50 = precision[0, :, k, 0, -1]
        if (p_all > -1).any():
            per_class[name] = {"AP": float(np.mean(p_all[p_all > -1])), "AP50": float(np.mean(p_50[p_50 > -1]))}
    stats = evaluator.stats
    return {"mAP": float(stats[0]), "mAP50": float(stats[1]), "mAP75": float(stats[2]),
            "per_class": per_class, "summary": summary.getvalue()}


def evaluate_detector(model: torch.nn.Module, dataset: Dataset, batch_size: int = 8, device: str = "cpu",
                      progress: Optional[Callable[[int, int], None]] = None) -> Dict:
    """Runs the model over the dataset and scores it with pycocotools. Returns the metrics of
    `coco_metrics` plus `num_images`, `num_detections` and `seconds`."""
    start = time.perf_counter()
    samples: Optional[List] = None if hasattr(dataset, "coco") else []
    results = predict_dataset(model, dataset, batch_size, device, progress, samples)
    metrics = coco_metrics(coco_ground_truth(dataset, samples), results)
    metrics.update(num_images=len(dataset), num_detections=len(results), seconds=time.perf_counter() - start)
    return metrics


__all__ = ["coco_ground_truth", "coco_metrics", "evaluate_detector", "predict_dataset"]
