"""Detect objects in images with a trained detector; write the detections as JSON and the images with their
boxes and labels drawn as PNG.

    python -m models.predict img1.png img2.jpg --checkpoint runs/shapes/checkpoint_best.pt --out predictions/

For each IMAGE, --out gets IMAGE_STEM.json ({"image", "width", "height", "detections": [{"box": [x1, y1, x2,
y2], "score", "label", "class"}]}) and IMAGE_STEM.png; detections below --score-threshold are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .engine import load_checkpoint

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 190), (0, 128, 128)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--checkpoint", required=True, help="a checkpoint written by models.train")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--score-threshold", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--scale", type=int, default=None,
                   help="draw on the image enlarged this many times (default: so the longer side is >= 512)")
    return p.parse_args(argv)


def load_image(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    with Image.open(path) as im:
        array = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def detections_to_json(det: Dict[str, torch.Tensor], class_names: Sequence[str], threshold: float) -> List[Dict]:
    out = []
    for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
        if score < threshold:
            continue
        name = class_names[label - 1] if 0 < label <= len(class_names) else str(label)
        out.append({"box": [round(v, 2) for v in box], "score": round(score, 4), "label": int(label), "class": name})
    return out


def draw(image: torch.Tensor, detections: List[Dict], scale: int) -> Image.Image:
    array = (image.permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    canvas = Image.fromarray(array).resize((array.shape[1] * scale, array.shape[0] * scale), Image.NEAREST)
    pen = ImageDraw.Draw(canvas)
    for d in detections:
        colour = PALETTE[(d["label"] - 1) % len(PALETTE)]
        x1, y1, x2, y2 = (v * scale for v in d["box"])
        pen.rectangle([x1, y1, x2, y2], outline=colour, width=max(2, scale))
        text = f"{d['class']} {d['score']:.2f}"
        left, top, right, bottom = pen.textbbox((x1, y1), text)
        y_text = max(0, y1 - (bottom - top) - 4)
        pen.rectangle([x1, y_text, x1 + (right - left) + 4, y_text + (bottom - top) + 4], fill=colour)
        pen.text((x1 + 2, y_text + 1), text, fill=(255, 255, 255))
    return canvas


@torch.no_grad()
def main(argv=None) -> int:
    args = parse_args(argv)
    model, _ = load_checkpoint(args.checkpoint, args.device)
    names = list(model.config.class_names) or [str(i) for i in range(1, model.config.num_classes + 1)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.images:
        path = Path(name)
        image = load_image(path)
        det = model([image.to(args.device)])[0]
        det = {k: v.cpu() for k, v in det.items()}
        found = detections_to_json(det, names, args.score_threshold)
        height, width = image.shape[1:]
        scale = args.scale or max(1, -(-512 // max(height, width)))
        record = {"image": str(path), "width": int(width), "height": int(height), "detections": found}
        (out / f"{path.stem}.json").write_text(json.dumps(record, indent=2))
        draw(image, found, scale).save(out / f"{path.stem}.png")
        summary = ", ".join(f"{d['class']} {d['score']:.2f}" for d in found) or "nothing"
        print(f"{path}: {len(found)} detection(s) ({summary}) -> {out / path.stem}.json/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
