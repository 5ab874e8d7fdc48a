"""Evaluate a trained detector with pycocotools (COCO mAP@[.5:.95], mAP@.5, mAP@.75, per-class AP).

    python -m models.evaluate --checkpoint runs/shapes/checkpoint_best.pt                  # held-out shapes
    python -m models.evaluate --checkpoint ckpt.pt --data path/to/coco --out metrics.json  # a COCO folder

Prints pycocotools' summary and a per-class table; --out writes the metrics as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .engine import SHAPES, Progress, build_dataset, load_checkpoint
from .evaluation import evaluate_detector


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by models.train")
    p.add_argument("--data", default=SHAPES, help="'shapes' (the held-out synthetic split) or a COCO folder")
    p.add_argument("--images", type=int, default=None,
                   help="synthetic images (default: the number held out in training)")
    p.add_argument("--image-size", type=int, default=None, help="synthetic image side (default: as in training)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the synthetic split (default: the training run's held-out seed)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="write the metrics to this JSON file")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, state = load_checkpoint(args.checkpoint, args.device)
    trained = state.get("args", {})
    dataset = build_dataset(
        args.data,
        num_images=args.images if args.images is not None else trained.get("val_images", 300),
        image_size=args.image_size if args.image_size is not None else trained.get("image_size", 128),
        seed=args.seed if args.seed is not None else trained.get("data_seed", 0) + 1000,
    )
    progress = Progress(len(dataset), "evaluating", every=max(1, len(dataset) // 10))
    metrics = evaluate_detector(model, dataset, args.batch_size, args.device,
                                 progress=lambda done, total: progress.update(done))
    print(metrics["summary"].rstrip())
    print(f"\n{'class':<16}{'AP@[.5:.95]':>12}{'AP@.5':>10}")
    for name, ap in metrics["per_class"].items():
        print(f"{name:<16}{ap['AP']:>12.4f}{ap['AP50']:>10.4f}")
    print(f"{'all':<16}{metrics['mAP']:>12.4f}{metrics['mAP50']:>10.4f}")
    print(f"\n{metrics['num_images']} images, {metrics['num_detections']} detections, {metrics['seconds']:.1f} s")
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        record = {k: v for k, v in metrics.items() if k != "summary"}
        record.update(checkpoint=str(args.checkpoint), data=args.data)
        out.write_text(json.dumps(record, indent=2))
        print(f"metrics written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
