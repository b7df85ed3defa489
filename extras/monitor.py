"""Where training progress goes: the console and VisualDL.

On a terminal, a tqdm bar with it/s and ETA (log lines are printed above it); elsewhere (AI Studio
background jobs, CI logs) one plain log line every ``log_every`` steps. VisualDL
(``<result_dir>/<dataset>/vdl``, view with ``visualdl --logdir results/<dataset>/vdl``) receives, at
the step they belong to: every loss term averaged over the interval (``loss/<term>``), the learning
rate (``lr``, shared by both optimizers), throughput (``speed/it_per_s``), the mean, min and max of ρ of every
AdaLIN/LIN layer (``rho/<network>.<layer>/{mean,min,max}``), and the sample grids with their CAM
heatmaps (``grid/A2B``, ``grid/B2A``). Only rank 0 of a distributed run writes anything.
"""
from __future__ import annotations

import contextlib
import logging
import math
import sys
import time

import numpy as np

from networks import GENERATORS

log = logging.getLogger('ugatit')


def rho_values(networks: dict) -> dict[str, np.ndarray]:
    """ρ of every AdaLIN/LIN layer of the generators, by 'genA2B.UpBlock1_1.norm1'-style name."""
    return {f'{name}.{key}': layer.rho.numpy() for name in GENERATORS
            for key, layer in networks[name].named_sublayers() if hasattr(layer, 'rho')}


def progress_bar(total: int, initial: int = 0, desc: str = '', unit: str = 'it', enabled: bool = True):
    """A tqdm bar when stderr is a terminal (and ``enabled``), else None."""
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, leave=True)


class Monitor:
    """Collects the losses of each step and reports interval means every ``log_every`` steps."""

    def __init__(self, logdir: str | None, first: int, total: int, log_every: int, enabled: bool = True):
        self.enabled = enabled
        self.total, self.log_every = total, log_every
        self.start = self.interval_start = time.time()
        self.sums, self.count, self.steps = {}, 0, 0
        self.writer = None
        if enabled and logdir:
            from visualdl import LogWriter
            self.writer = LogWriter(logdir=logdir)
        self.bar = progress_bar(total, initial=first - 1, desc='train', enabled=enabled)
        self._redirect = contextlib.ExitStack()
        if self.bar is not None:                   # keep log lines above the bar
            from tqdm.contrib.logging import logging_redirect_tqdm
            self._redirect.enter_context(logging_redirect_tqdm(loggers=[log]))

    def step(self, losses: dict[str, float], skipped: bool = False) -> None:
        """Record one step (skipped steps, with no update, are counted but not averaged)."""
        self.steps += 1
        if not skipped:
            for k, v in losses.items():
                self.sums[k] = self.sums.get(k, 0.0) + v
            self.count += 1
        if self.bar is not None:
            self.bar.update(1)

    def report(self, step: int, lr: float, rho: dict[str, np.ndarray]) -> None:
        """The interval's console line and VisualDL scalars; then a new interval starts."""
        now = time.time()
        speed = self.steps / max(now - self.interval_start, 1e-9)
        means = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        if self.enabled:
            d_loss, g_loss = means.get('D_loss', math.nan), means.get('G_loss', math.nan)
            if self.bar is not None:
                self.bar.set_postfix(d_loss=f'{d_loss:.3f}', g_loss=f'{g_loss:.3f}', refresh=False)
            else:
                log.info('[%7d/%7d] time %.1fs  %.2f it/s  d_loss %.4f  g_loss %.4f  lr %.2e',
                         step, self.total, now - self.start, speed, d_loss, g_loss, lr)
        if self.writer is not None:
            for k, v in means.items():
                self.writer.add_scalar(f'loss/{k}', v, step)
            self.writer.add_scalar('lr', lr, step)
            self.writer.add_scalar('speed/it_per_s', speed, step)
            for layer, values in rho.items():
                for stat in ('mean', 'min', 'max'):
                    self.writer.add_scalar(f'rho/{layer}/{stat}', float(getattr(values, stat)()), step)
        self.sums, self.count, self.steps, self.interval_start = {}, 0, 0, now

    def image(self, tag: str, bgr01: np.ndarray, step: int) -> None:
        """A BGR float image in [0, 1] (a sample grid) → VisualDL, as RGB uint8."""
        if self.writer is not None:
            rgb = np.clip(bgr01[:, :, ::-1] * 255 + 0.5, 0, 255).astype(np.uint8)
            self.writer.add_image(tag, rgb, step=step, dataformats='HWC')

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self._redirect.close()
        if self.writer is not None:
            self.writer.close()
