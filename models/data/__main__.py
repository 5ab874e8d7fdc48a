"""Export the synthetic shapes data as a COCO-format folder (images/*.png + annotations.json).

    python -m models.data --out data/shapes_val --images 300 --seed 1000

The same folder can be read back with models.data.CocoDetection, or given to models.train / models.evaluate
as --data / --val-data.
"""

from __future__ import annotations

import argparse
import sys

from .coco import export_coco
from .shapes import ShapesConfig, ShapesDataset


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m models.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=1000, help="1000 = the held-out split of models.train's defaults")
    p.add_argument("--split-name", default=None)
    args = p.parse_args(argv)
    dataset = ShapesDataset(ShapesConfig(num_images=args.images, image_size=args.image_size, seed=args.seed))
    path = export_coco(dataset, args.out, split_name=args.split_name)
    print(f"{len(dataset)} images and their annotations written to {path.parent} ({path.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
