"""Small helpers, as the official utils.py: strict booleans, folders, the CAM heatmap and the strips
of translations, atomic file writes."""
from __future__ import annotations

import argparse
import contextlib
import os
import tempfile

import cv2
import numpy as np

_TRUE = ('true', 't', 'yes', 'y', '1')
_FALSE = ('false', 'f', 'no', 'n', '0')


def str2bool(x) -> bool:
    """Parse a boolean flag strictly: true/false, yes/no, 1/0 (any case); anything else is an error.

    The official ``x.lower() in ('true')`` is a substring test of the string 'true': it reads
    'rue', 'tr' or an empty string as True and every other word, typos of 'true' included, as False.
    """
    if isinstance(x, bool):
        return x
    value = str(x).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f'expected a boolean (True/False), got {x!r}')


def check_folder(log_dir: str) -> str:
    os.makedirs(log_dir, exist_ok=True)
    return log_dir


def denorm(x):
    """[-1, 1] → [0, 1]."""
    return x * 0.5 + 0.5


def tensor2numpy(x) -> np.ndarray:
    """C×H×W tensor → H×W×C float array."""
    return np.asarray(x.numpy() if hasattr(x, 'numpy') else x).transpose(1, 2, 0)


def cam(x: np.ndarray, size: int = 256) -> np.ndarray:
    """Heatmap H×W(×1) → size×size×3 RGB uint8 JET colour map (min–max normalised, as official)."""
    x = np.asarray(x, np.float32).squeeze()
    x = x - np.min(x)
    peak = np.max(x)
    cam_img = np.uint8(255 * (x / peak if peak > 0 else x))
    cam_img = cv2.resize(cam_img, (size, size))
    return cv2.cvtColor(cv2.applyColorMap(cam_img, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)


def to_rgb_tile(image) -> np.ndarray:
    """A generator input or output C×H×W in [-1, 1] → H×W×3 RGB uint8 (grey repeated)."""
    x = np.clip(tensor2numpy(denorm(image)) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return np.repeat(x, 3, axis=2) if x.shape[2] == 1 else x


def translation_strip(real, identity, identity_heatmap, fake, fake_heatmap, cycle, cycle_heatmap,
                      img_size: int) -> np.ndarray:
    """The official 7-tile column: real, CAM, identity, CAM, translation, CAM, cycle (RGB uint8).

    A missing heatmap (a generator without CAM) is a black tile.
    """
    def heat(h):
        return np.zeros((img_size, img_size, 3), np.uint8) if h is None else cam(tensor2numpy(h), img_size)
    return np.concatenate([to_rgb_tile(real), heat(identity_heatmap), to_rgb_tile(identity),
                           heat(fake_heatmap), to_rgb_tile(fake), heat(cycle_heatmap), to_rgb_tile(cycle)], axis=0)


def translation_strips(real: np.ndarray, outputs: list, img_size: int) -> list[np.ndarray]:
    """The official 7-tile strip of each image of a batch; ``outputs`` = (translation, its heatmap,
    cycle, its heatmap, identity, its heatmap) as the test sequence returns them (heatmaps may be None)."""
    fake, fake_heatmap, cycle, cycle_heatmap, identity, identity_heatmap = outputs

    def at(heatmap, i):
        return None if heatmap is None else heatmap[i]
    return [translation_strip(real[i], identity[i], at(identity_heatmap, i), fake[i], at(fake_heatmap, i),
                              cycle[i], at(cycle_heatmap, i), img_size) for i in range(real.shape[0])]


@contextlib.contextmanager
def atomic_path(path: str):
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    A crash at any moment leaves the old file or the new one, never a mix: the temporary file
    (``.<name>.<random>.tmp`` in the same folder) is fsynced, renamed over ``path`` (atomic on
    POSIX), and the folder fsynced so the rename itself is durable. On an exception the temporary
    file is removed; one left by a killed process is removed at the next training start.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)          # mkstemp's 0600 would hide checkpoints from the group
    try:
        yield tmp
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(data)
