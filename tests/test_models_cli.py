"""End-to-end runs of the reference detector's command-line tools (models.train, models.evaluate,
models.predict), each in a subprocess on tiny synthetic data, plus a two-process torchrun smoke run.

One short training run (module fixture) provides the checkpoints that the other tests use; every run writes
only under pytest's temporary directories.
"""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import engine
from models import evaluate as evaluate_cli
from models.data import CLASSES, ShapesConfig, ShapesDataset
from models.faster_rcnn import DetectorConfig, FasterRCNN

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 3
TRAIN_ARGS = ["--train-images", "32", "--val-images", "8", "--image-size", "64", "--batch-size", "4",
              "--eval-every", "3", "--warmup-iters", "2", "--lr", "0.01", "--threads", "1"]
EPOCH_DONE = re.compile(r"epoch (\d+) done: loss ([0-9.]+)")


def run(args, cwd, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def check_ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout[-3000:]}\n" \
                                   f"stderr:\n{result.stderr[-3000:]}"


def epoch_losses(log_text):
    return {int(m.group(1)): float(m.group(2)) for m in EPOCH_DONE.finditer(log_text)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One smoke training run: 3 epochs of 8 steps on 32 synthetic 64 x 64 images, evaluated after the last."""
    root = tmp_path_factory.mktemp("train")
    out = root / "run"
    result = run(["-m", "models.train", "--out", str(out), "--epochs", str(EPOCHS), *TRAIN_ARGS], cwd=root)
    check_ok(result)
    return out


@pytest.fixture(scope="module")
def shapes_png(tmp_path_factory):
    """A 64 x 64 image of the synthetic shapes data (the held-out seed), as a PNG file."""
    image, _ = ShapesDataset(ShapesConfig(num_images=1, image_size=64, seed=1000))[0]
    array = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = tmp_path_factory.mktemp("images") / "shapes_0.png"
    Image.fromarray(array).save(path)
    return path


# ------------------------------------------------------------------------------------------- models.train

def test_train_writes_its_outputs(trained):
    for name in ("config.json", "log.txt", "metrics.jsonl", "metrics_final.json", "checkpoint_last.pt",
                 "checkpoint_best.pt"):
        assert (trained / name).is_file(), name
    config = json.loads((trained / "config.json").read_text())
    assert config["world_size"] == 1
    assert config["detector"]["num_classes"] == len(CLASSES)
    assert tuple(config["detector"]["class_names"]) == CLASSES
    assert config["args"]["epochs"] == EPOCHS and config["args"]["image_size"] == 64
    DetectorConfig.from_dict(config["detector"])  # a valid configuration


def test_train_loss_goes_down(trained):
    losses = epoch_losses((trained / "log.txt").read_text())
    assert sorted(losses) == list(range(1, EPOCHS + 1))
    assert losses[EPOCHS] < losses[1], losses


def test_train_metrics(trained):
    lines = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [m["epoch"] for m in lines] == [EPOCHS]  # --eval-every 3: only after the last epoch
    final = json.loads((trained / "metrics_final.json").read_text())
    for key in ("mAP", "mAP50", "mAP75"):
        assert 0.0 <= final[key] <= 1.0, (key, final[key])
    assert final["mAP"] <= final["mAP50"]
    assert final["num_images"] == 8
    assert final["world_size"] == 1
    assert final["best_map50"] == pytest.approx(final["mAP50"])
    assert set(final["per_class"]) <= set(CLASSES)


def test_checkpoint_contents(trained):
    last = torch.load(trained / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert last["epoch"] == EPOCHS
    assert {"model", "config", "optimizer", "scheduler", "rng", "loader_rng", "args"} <= set(last)
    assert last["scheduler"]["last_epoch"] == EPOCHS * 8  # 32 images / batch 4 = 8 steps per epoch
    assert not any(k.startswith("module.") for k in last["model"])
    best = torch.load(trained / "checkpoint_best.pt", map_location="cpu", weights_only=False)
    assert best["epoch"] == EPOCHS  # the only evaluation
    for key, value in best["model"].items():
        assert torch.equal(value, last["model"][key]), key  # same epoch, same weights


def test_load_checkpoint_round_trip(trained, shapes_png):
    torch.manual_seed(123)
    model, state = engine.load_checkpoint(trained / "checkpoint_last.pt")
    assert not model.training
    rebuilt = FasterRCNN(DetectorConfig.from_dict(state["config"]))
    rebuilt.load_state_dict(state["model"])
    rebuilt.eval()
    fresh = FasterRCNN(DetectorConfig.from_dict(state["config"])).eval()  # random weights
    image, _ = ShapesDataset(ShapesConfig(num_images=1, image_size=64, seed=1000))[0]
    with torch.no_grad():
        a, b, c = model([image])[0], rebuilt([image])[0], fresh([image])[0]
    assert a["scores"].numel() > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(a[key], b[key]), key
    assert not (a["boxes"].shape == c["boxes"].shape and torch.equal(a["boxes"], c["boxes"]))


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        engine.load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"weights": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a checkpoint"):
        engine.load_checkpoint(tmp_path / "other.pt")


def test_train_resume(trained, tmp_path):
    out = tmp_path / "resumed"
    resume_from = trained / "checkpoint_last.pt"
    result = run(["-m", "models.train", "--out", str(out), "--epochs", str(EPOCHS + 1), "--resume",
                  str(resume_from), *TRAIN_ARGS], cwd=tmp_path)
    check_ok(result)
    log = (out / "log.txt").read_text()
    assert f"resumed from {resume_from} after epoch {EPOCHS}" in log
    assert sorted(epoch_losses(log)) == [EPOCHS + 1]  # only the new epoch was trained
    state = torch.load(out / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert state["epoch"] == EPOCHS + 1
    assert state["scheduler"]["last_epoch"] == (EPOCHS + 1) * 8  # the step count continued
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert [m["epoch"] for m in metrics] == [EPOCHS + 1]
    # The weights changed in the new epoch.
    before = torch.load(resume_from, map_location="cpu", weights_only=False)["model"]
    assert any(not torch.equal(v, state["model"][k]) for k, v in before.items() if v.is_floating_point())


# ------------------------------------------------------------------------------------------- models.evaluate

def test_evaluate_cli(trained, tmp_path):
    out = tmp_path / "eval" / "m.json"
    result = run(["-m", "models.evaluate", "--checkpoint", str(trained / "checkpoint_best.pt"), "--images", "8",
                  "--image-size", "64", "--threads", "1", "--out", str(out)], cwd=tmp_path)
    check_ok(result)
    metrics = json.loads(out.read_text())
    assert {"mAP", "mAP50", "per_class"} <= set(metrics)
    assert 0.0 <= metrics["mAP"] <= metrics["mAP50"] <= 1.0
    assert set(metrics["per_class"]) <= set(CLASSES)
    assert metrics["num_images"] == 8
    assert metrics["checkpoint"] == str(trained / "checkpoint_best.pt")
    # The same held-out images (seed data_seed + 1000) as the training run's evaluation, the same weights:
    # the same numbers.
    final = json.loads((trained / "metrics_final.json").read_text())
    assert metrics["mAP50"] == pytest.approx(final["mAP50"], abs=1e-6)
    assert metrics["mAP"] == pytest.approx(final["mAP"], abs=1e-6)
    assert "all" in result.stdout


class _Stop(Exception):
    pass


def _dataset_defaults(monkeypatch, checkpoint):
    """The dataset models.evaluate would build for `checkpoint` when --images / --image-size / --seed are
    left out (build_dataset is replaced by a recorder that stops the run)."""
    seen = {}

    def record(spec, **kwargs):
        seen.update(kwargs, spec=spec)
        raise _Stop

    monkeypatch.setattr(evaluate_cli, "build_dataset", record)
    with pytest.raises(_Stop):
        evaluate_cli.main(["--checkpoint", str(checkpoint)])
    return seen


def test_evaluate_defaults_follow_training_run_last(trained, monkeypatch):
    seen = _dataset_defaults(monkeypatch, trained / "checkpoint_last.pt")
    assert seen == {"spec": "shapes", "num_images": 8, "image_size": 64, "seed": 1000}


def test_evaluate_defaults_follow_training_run_best(trained, monkeypatch):
    seen = _dataset_defaults(monkeypatch, trained / "checkpoint_best.pt")
    assert seen == {"spec": "shapes", "num_images": 8, "image_size": 64, "seed": 1000}


# ------------------------------------------------------------------------------------------- models.predict

def test_predict_cli(trained, shapes_png, tmp_path):
    out = tmp_path / "pred"
    result = run(["-m", "models.predict", str(shapes_png), "--checkpoint", str(trained / "checkpoint_last.pt"),
                  "--out", str(out), "--score-threshold", "0.0"], cwd=tmp_path)
    check_ok(result)
    record = json.loads((out / "shapes_0.json").read_text())
    assert record["image"] == str(shapes_png)
    assert (record["width"], record["height"]) == (64, 64)
    found = record["detections"]
    assert len(found) > 0  # threshold 0: everything the model returns (its own score threshold is 0.05)
    for d in found:
        assert set(d) == {"box", "score", "label", "class"}
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 64 and 0 <= y1 <= y2 <= 64
        assert 0.0 <= d["score"] <= 1.0
        assert 1 <= d["label"] <= len(CLASSES) and d["class"] == CLASSES[d["label"] - 1]
    with Image.open(out / "shapes_0.png") as im:
        im.load()
        assert im.size == (512, 512)  # drawn enlarged so that the longer side is >= 512: 8 x 64
    assert "shapes_0.png" in result.stdout

    # A higher threshold keeps a subset: only the detections scoring at least that much. The JSON's scores
    # are rounded to 4 decimals, so the cut goes halfway between two that differ by more than that rounding.
    scores = sorted({d["score"] for d in found})
    gaps = [(b - a, (a + b) / 2) for a, b in zip(scores, scores[1:]) if b - a > 2e-4]
    assert gaps, scores
    cut = gaps[len(gaps) // 2][1]
    out2 = tmp_path / "pred2"
    result = run(["-m", "models.predict", str(shapes_png), "--checkpoint", str(trained / "checkpoint_last.pt"),
                  "--out", str(out2), "--score-threshold", str(cut)], cwd=tmp_path)
    check_ok(result)
    kept = json.loads((out2 / "shapes_0.json").read_text())["detections"]
    assert kept == [d for d in found if d["score"] >= cut]
    assert 0 < len(kept) < len(found)


def test_predict_missing_image(trained, tmp_path):
    result = run(["-m", "models.predict", str(tmp_path / "no_such.png"), "--checkpoint",
                  str(trained / "checkpoint_last.pt"), "--out", str(tmp_path / "pred")], cwd=tmp_path)
    assert result.returncode != 0
    assert "image not found" in result.stderr


# ------------------------------------------------------------------------------------------- torchrun

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    result = run(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                  "-m", "models.train", "--out", str(out), "--train-images", "16", "--val-images", "4",
                  "--image-size", "64", "--epochs", "1", "--batch-size", "2", "--threads", "1"],
                 cwd=tmp_path, timeout=180)
    check_ok(result)
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    assert (out / "checkpoint_last.pt").is_file()
    log = (out / "log.txt").read_text()
    assert "2 process(es)" in log
    assert "1 epochs of 4 steps" in log  # 16 images split over 2 processes, batch 2 each
    assert json.loads((out / "metrics_final.json").read_text())["world_size"] == 2
    model, state = engine.load_checkpoint(out / "checkpoint_last.pt")  # saved unwrapped from DDP
    assert state["epoch"] == 1 and not model.training
