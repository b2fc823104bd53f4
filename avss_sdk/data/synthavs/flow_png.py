"""Optical flow in the KITTI 16-bit PNG format.

Channels R, G, B = u, v, valid with u and v stored as ``uint16(value * 64 + 2**15)``
(1/64 px steps, range about +-512 px). OpenCV reads and writes BGR, hence the reversal.
"""

from __future__ import annotations

import os

import cv2
import numpy as np


def write_flow_png(path: str | os.PathLike, flow: np.ndarray) -> None:
    """Write ``flow`` [H, W, 2] (u, v in pixels) as a KITTI flow PNG, valid everywhere."""
    enc = np.clip(np.round(flow.astype(np.float64) * 64.0 + 2.0**15), 0, 65535).astype(np.uint16)
    valid = np.ones(flow.shape[:2], np.uint16)
    bgr = np.stack([valid, enc[..., 1], enc[..., 0]], axis=-1)
    if not cv2.imwrite(os.fspath(path), bgr):
        raise OSError(f"could not write {path}")


def read_flow_png(path: str | os.PathLike) -> np.ndarray:
    """Read a KITTI flow PNG as [H, W, 2] float32 (u, v in pixels; invalid pixels are 0)."""
    bgr = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if bgr is None or bgr.dtype != np.uint16 or bgr.ndim != 3:
        raise OSError(f"{path} is not a 16-bit 3-channel flow PNG")
    flow = (bgr[..., [2, 1]].astype(np.float32) - 2.0**15) / 64.0
    flow[bgr[..., 0] == 0] = 0.0
    return flow
