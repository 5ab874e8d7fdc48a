"""Train the reference Faster R-CNN.

    python -m models.train --out runs/shapes                        # synthetic shapes, defaults
    python -m models.train --data path/to/coco --val-data path/to/coco_val --out runs/mine --epochs 24
    torchrun --nproc_per_node 2 -m models.train --out runs/ddp      # DistributedDataParallel (gloo / nccl)

Writes to --out: config.json, log.txt, metrics.jsonl (one line per evaluation), checkpoint_last.pt,
checkpoint_best.pt (best mAP@.5) and metrics_final.json. --resume continues from a checkpoint_last.pt.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from .data import RandomHorizontalFlip, collate_fn
from .engine import (SHAPES, barrier, build_dataset, init_distributed, load_checkpoint, save_checkpoint,
                     train_one_epoch, unwrap, warmup_cosine)
from .evaluation import evaluate_detector
from .faster_rcnn import FasterRCNN, load_config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m models.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data", default=SHAPES, help="'shapes' (synthetic, default) or a COCO folder")
    d.add_argument("--val-data", default=None, help="held-out data: 'shapes' (another seed) or a COCO folder "
                   "(default: shapes when --data is shapes, else none)")
    d.add_argument("--train-images", type=int, default=2000, help="synthetic training images")
    d.add_argument("--val-images", type=int, default=300, help="synthetic held-out images")
    d.add_argument("--image-size", type=int, default=128, help="synthetic image side")
    d.add_argument("--data-seed", type=int, default=0, help="seed of the synthetic training split (held-out: +1000)")
    d.add_argument("--hflip", type=float, default=0.5, help="probability of a horizontal flip in training")
    m = p.add_argument_group("model")
    m.add_argument("--config", default=None, help="JSON file of DetectorConfig options")
    m.add_argument("--backbone", default=None, choices=["small", "resnet18", "resnet34", "resnet50"])
    m.add_argument("--roi-op", default=None, choices=["align", "pool"])
    m.add_argument("--min-size", type=int, default=None, help="resize shorter image side to this (with --max-size)")
    m.add_argument("--max-size", type=int, default=None)
    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=12)
    o.add_argument("--batch-size", type=int, default=8, help="images per step and process")
    o.add_argument("--lr", type=float, default=0.02)
    o.add_argument("--momentum", type=float, default=0.9)
    o.add_argument("--weight-decay", type=float, default=1e-4)
    o.add_argument("--warmup-iters", type=int, default=200)
    o.add_argument("--time-limit", type=float, default=None, help="stop training after this many minutes")
    r = p.add_argument_group("run")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--resume", default=None, help="checkpoint to continue from")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="cpu")
    r.add_argument("--threads", type=int, default=None, help="torch threads per process")
    r.add_argument("--workers", type=int, default=0, help="data loader processes")
    r.add_argument("--eval-every", type=int, default=2, help="evaluate every N epochs (and after the last)")
    r.add_argument("--log-every", type=int, default=25, help="log line every N steps")
    r.add_argument("--max-steps", type=int, default=None, help="stop each epoch after N steps (smoke runs)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank, world = init_distributed(args.device)
    main_process = rank == 0
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if main_process:
        out.mkdir(parents=True, exist_ok=True)
    barrier()
    log_file = open(out / "log.txt", "a") if main_process else None

    launched = time.time()

    def log(message: str) -> None:
        if main_process:
            elapsed = int(time.time() - launched)
            line = f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {message}"
            print(line, flush=True)
            log_file.write(line + "\n")
            log_file.flush()

    # Data.
    flip = RandomHorizontalFlip(args.hflip) if args.hflip > 0 else None
    train_set = build_dataset(args.data, num_images=args.train_images, image_size=args.image_size,
                              seed=args.data_seed, transforms=flip)
    val_spec = args.val_data or (SHAPES if args.data == SHAPES else None)
    val_set = (build_dataset(val_spec, num_images=args.val_images, image_size=args.image_size,
                             seed=args.data_seed + 1000) if val_spec else None)
    classes = tuple(getattr(train_set, "classes", ()))

    # Model, optimiser, schedule.
    torch.manual_seed(args.seed)
    config = load_config(args.config, num_classes=len(classes) or None, class_names=classes or None,
                         backbone=args.backbone, roi_op=args.roi_op, min_size=args.min_size, max_size=args.max_size)
    model = FasterRCNN(config).to(args.device)
    sampler = DistributedSampler(train_set, world, rank, shuffle=True, seed=args.seed) if world > 1 else None
    generator = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                        collate_fn=collate_fn, num_workers=args.workers, generator=generator, drop_last=True)
    steps_per_epoch = len(loader) if args.max_steps is None else min(len(loader), args.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(args.epochs * steps_per_epoch, min(args.warmup_iters, steps_per_epoch * args.epochs)))
    start_epoch, best = 1, -1.0
    if args.resume:
        _, state = load_checkpoint(args.resume, args.device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"] + 1, state.get("best_map50", -1.0)
        generator.set_state(state["loader_rng"])
        log(f"resumed from {args.resume} after epoch {state['epoch']}")
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model)
    torch.manual_seed(args.seed * 1000 + rank)  # sampling of anchors and RoIs, per process
    if args.resume and world == 1:
        torch.set_rng_state(state["rng"])  # a resumed single-process run continues the same random stream

    if main_process:
        (out / "config.json").write_text(json.dumps({"detector": config.to_dict(), "args": vars(args),
                                                     "world_size": world}, indent=2))
    log(f"training {config.backbone} Faster R-CNN ({sum(p.numel() for p in params) / 1e6:.2f} M parameters, "
        f"RoI {config.roi_op}) on {len(train_set)} images ({args.data}), {world} process(es) x "
        f"{torch.get_num_threads()} threads, batch {args.batch_size} per process, {args.epochs} epochs of "
        f"{steps_per_epoch} steps" + (f", time limit {args.time_limit} min" if args.time_limit else ""))
    started = time.time()
    deadline = started + 60 * args.time_limit if args.time_limit else None
    metrics = None
    for epoch in range(start_epoch, args.epochs + 1):
        if sampler is not None:
            sampler.set_epoch(epoch)
        limited = _limit(loader, args.max_steps)
        stats = train_one_epoch(model, optimizer, scheduler, limited, args.device, epoch, args.epochs,
                                log=log, log_every=args.log_every, deadline=deadline,
                                show=main_process and sys.stdout.isatty())
        log(f"epoch {epoch} done: loss {stats['losses'].get('loss', float('nan')):.4f}, "
            f"{stats['images_per_second'] * world:.1f} images/s, {(time.time() - started) / 60:.1f} min elapsed")
        last = epoch == args.epochs or stats["stopped_by_time_limit"]
        if main_process and val_set is not None and (epoch % args.eval_every == 0 or last):
            metrics = evaluate_detector(unwrap(model), val_set, batch_size=args.batch_size, device=args.device)
            metrics.update(epoch=epoch, minutes=(time.time() - started) / 60, train_losses=stats["losses"])
            with open(out / "metrics.jsonl", "a") as f:
                f.write(json.dumps({k: v for k, v in metrics.items() if k != "summary"}) + "\n")
            log(f"epoch {epoch} eval on {len(val_set)} images: mAP@[.5:.95] {metrics['mAP']:.4f}, "
                f"mAP@.5 {metrics['mAP50']:.4f}, per class AP@.5 "
                + ", ".join(f"{k} {v['AP50']:.3f}" for k, v in metrics["per_class"].items()))
            if metrics["mAP50"] > best:
                best = metrics["mAP50"]
                save_checkpoint(out / "checkpoint_best.pt", model, epoch=epoch, best_map50=best, args=vars(args))
        if main_process:
            save_checkpoint(out / "checkpoint_last.pt", model, optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict(), epoch=epoch, best_map50=best,
                            rng=torch.get_rng_state(), loader_rng=generator.get_state(), args=vars(args))
        barrier()
        if stats["stopped_by_time_limit"]:
            log(f"time limit reached after epoch {epoch}")
            break
    if main_process:
        final = {"minutes": (time.time() - started) / 60, "best_map50": best, "world_size": world}
        if metrics is not None:
            final.update({k: v for k, v in metrics.items() if k != "summary"})
            log("COCO summary (pycocotools):\n" + metrics["summary"].rstrip())
        (out / "metrics_final.json").write_text(json.dumps(final, indent=2))
        log(f"done in {final['minutes']:.1f} min; outputs in {out}")
        log_file.close()
    barrier()
    return 0


def _limit(loader, max_steps):
    if max_steps is None:
        return loader

    class Limited:
        def __len__(self):
            return min(len(loader), max_steps)

        def __iter__(self):
            for i, item in enumerate(loader):
                if i >= max_steps:
                    return
                yield item

    return Limited()


if __name__ == "__main__":
    sys.exit(main())
