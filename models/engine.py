"""Training machinery shared by the command-line tools: datasets from a spec, checkpoints, progress output,
distributed set-up, one training epoch."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch.utils.data import Dataset

from .data import CocoDetection, ShapesConfig, ShapesDataset
from .faster_rcnn import DetectorConfig, FasterRCNN

SHAPES = "shapes"


def build_dataset(spec: str, *, num_images: int = 1000, image_size: int = 128, seed: int = 0,
                  transforms=None) -> Dataset:
    """`spec` "shapes": the synthetic shapes data (num_images of image_size pixels generated from seed);
    anything else: a COCO-format folder (images/ + annotations.json)."""
    if spec == SHAPES:
        dataset = ShapesDataset(ShapesConfig(num_images=num_images, image_size=image_size, seed=seed))
        if transforms is not None:
            return _Transformed(dataset, transforms)
        return dataset
    return CocoDetection(spec, transforms=transforms)


class _Transformed(Dataset):
    """A dataset with a (image, target) -> (image, target) transform applied; forwards `classes`."""

    def __init__(self, dataset: Dataset, transforms) -> None:
        self.dataset, self.transforms = dataset, transforms
        self.classes = getattr(dataset, "classes", ())

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.transforms(*self.dataset[index])


def save_checkpoint(path: Union[str, Path], model: torch.nn.Module, **extra) -> None:
    """Writes the (unwrapped) model's weights and config plus `extra` atomically."""
    model = unwrap(model)
    state = {"model": model.state_dict(), "config": model.config.to_dict(), **extra}
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Union[str, Path], device: str = "cpu") -> Tuple[FasterRCNN, Dict]:
    """The model stored in a checkpoint (in eval mode, on `device`) and the checkpoint dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location=device, weights_only=False)
    if "model" not in state or "config" not in state:
        raise ValueError(f"{path} is not a checkpoint of models.train (no 'model' / 'config' entries)")
    model = FasterRCNN(DetectorConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


# ---------------------------------------------------------------------------------------------- distributed

def init_distributed(device: str) -> Tuple[int, int]:
    """Joins the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA.
    Returns (rank, world size); (0, 1) for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend=backend)
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _past(deadline: float) -> bool:
    """Whether the deadline has passed, agreed by every process (so that all stop at the same step)."""
    late = torch.tensor([1 if time.time() >= deadline else 0])
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl":
            late = late.cuda()
        dist.all_reduce(late, op=dist.ReduceOp.MAX)
    return bool(late.item())


# ---------------------------------------------------------------------------------------------- progress

class Progress:
    """One status line: redrawn in place on a terminal, printed every `every` steps (and at the end)
    otherwise, so logs stay readable."""

    def __init__(self, total: int, prefix: str = "", every: int = 20, stream=None, enabled: bool = True) -> None:
        self.total, self.prefix, self.every = total, prefix, max(1, every)
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()

    def update(self, step: int, text: str = "") -> None:
        if not self.enabled:
            return
        last = step == self.total
        if not self.tty and step % self.every and not last:
            return
        elapsed = time.perf_counter() - self.start
        eta = elapsed / max(step, 1) * (self.total - step)
        width = 24
        filled = int(width * step / max(self.total, 1))
        bar = "#" * filled + "." * (width - filled)
        line = f"{self.prefix} [{bar}] {step}/{self.total} {text} {_clock(elapsed)}<{_clock(eta)}"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if last else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------------------------- training

def warmup_cosine(total_iters: int, warmup_iters: int, warmup_factor: float = 0.001):
    """LR multiplier: linear warm-up from warmup_factor to 1, then a cosine decay to 0 at total_iters."""

    def factor(it: int) -> float:
        if it < warmup_iters:
            alpha = it / max(1, warmup_iters)
            return warmup_factor * (1 - alpha) + alpha
        progress = (it - warmup_iters) / max(1, total_iters - warmup_iters)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def train_one_epoch(model, optimizer, scheduler, loader, device: str, epoch: int, epochs: int,
                    log=None, log_every: int = 20, deadline: Optional[float] = None, show: bool = True) -> Dict:
    """One pass over `loader`. Returns the mean of each loss, images/s, and whether the deadline
    (time.time() value) stopped it early."""
    model.train()
    sums: Dict[str, float] = {}
    steps = images = 0
    stopped = False
    start = time.perf_counter()
    progress = Progress(len(loader), f"epoch {epoch}/{epochs}", every=log_every, enabled=show)
    for step, (batch, targets) in enumerate(loader, 1):
        batch = [im.to(device) for im in batch]
        targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for t in targets]
        losses = model(batch, targets)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch}, step {step}: {losses}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        steps += 1
        images += len(batch)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        text = f"loss {sums['loss'] / steps:.4f} lr {optimizer.param_groups[0]['lr']:.4g}"
        progress.update(step, text)
        if log is not None and (step % log_every == 0 or step == len(loader)):
            parts = " ".join(f"{k} {v / steps:.4f}" for k, v in sums.items())
            log(f"epoch {epoch} step {step}/{len(loader)} {parts} lr {optimizer.param_groups[0]['lr']:.5f}")
        if deadline is not None and _past(deadline):
            stopped = True
            break
    elapsed = time.perf_counter() - start
    means = {k: v / max(steps, 1) for k, v in sums.items()}
    return {"losses": means, "images_per_second": images / max(elapsed, 1e-9), "steps": steps,
            "stopped_by_time_limit": stopped}


__all__ = [
    "SHAPES", "Progress", "barrier", "build_dataset", "init_distributed", "load_checkpoint", "save_checkpoint",
    "train_one_epoch", "unwrap", "warmup_cosine",
]
