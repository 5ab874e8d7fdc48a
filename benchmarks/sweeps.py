"""Scaling sweeps: how each side's cost grows with the work (log-log curves in the plots).

nms over 500...100k uniformly random boxes, box_iou over N x N up to 10k x 10k, roi_align over 64...4096
RoIs. Points where torchvision takes seconds are marked heavy and left out of --quick.
"""

from typing import List

import torch
import torchvision

import pydet_ops

from .workloads import Workload, check_close, check_kept_indices, feature_map_and_rois, uniform_boxes


def _nms_sweep() -> List[Workload]:
    out = []
    for n in (500, 1000, 2000, 5000, 10000, 20000, 50000, 100000):
        out.append(
            Workload(
                "nms",
                f"sweep n={n}",
                f"{n} boxes, iou 0.5",
                # Boxes spread over an image that grows with n, so the density (and the kept fraction) stays
                # that of 1000 boxes on a 1000x1000 image.
                lambda g, n=n: (uniform_boxes(n, g, image=1000.0 * (n / 1000) ** 0.5), torch.rand(n, generator=g), 0.5),
                torchvision.ops.nms,
                pydet_ops.nms,
                check_kept_indices,
                sweep="nms (boxes)",
                size=n,
                heavy=n > 5000,
            )
        )
    return out


def _box_iou_sweep() -> List[Workload]:
    out = []
    for n in (100, 300, 1000, 3000, 10000):
        out.append(
            Workload(
                "box_iou",
                f"sweep {n}x{n}",
                f"[{n},4] x [{n},4]",
                lambda g, n=n: (uniform_boxes(n, g), uniform_boxes(n, g)),
                torchvision.ops.box_iou,
                pydet_ops.box_iou,
                check_close,
                sweep="box_iou (N x N pairs)",
                size=n * n,
                heavy=n > 1000,
            )
        )
    return out


def _roi_align_sweep() -> List[Workload]:
    out = []
    for k in (64, 256, 1024, 4096):
        out.append(
            Workload(
                "roi_align",
                f"sweep {k} RoIs NCHW",
                f"1x256x200x200, {k} RoIs, 7x7",
                lambda g, k=k: feature_map_and_rois(g, num_rois=k),
                lambda x, x_cl, rois: torchvision.ops.roi_align(x, rois, 7, 0.25, 2, True),
                lambda x, x_cl, rois: pydet_ops.roi_align(x, rois, 7, 0.25, 2, True),
                check_close,
                sweep="roi_align (RoIs, NCHW)",
                size=k,
                heavy=k > 256,
            )
        )
    return out


def sweep_workloads() -> List[Workload]:
    return _nms_sweep() + _box_iou_sweep() + _roi_align_sweep()
