"""Guards around the training step and loop: non-finite updates skipped, stop signals turned into a
checkpoint and a clean exit. Nothing here changes a finite step's numbers."""
from __future__ import annotations

import contextlib
import logging
import signal

import paddle

from extras.distributed import any_rank

log = logging.getLogger('ugatit')


class TrainingDiverged(RuntimeError):
    """Too many consecutive training steps with non-finite losses or gradients."""


def all_finite(tensors) -> bool:
    """True when no element of ``tensors`` is NaN or ±inf (one reduction, one sync)."""
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return True
    # Any NaN or ±inf makes the sum NaN or ±inf (finite values could only overflow at ~1e38).
    total = paddle.add_n([t.astype('float32').sum().reshape([]) for t in tensors])
    return bool(paddle.isfinite(total))


def update_is_finite(loss: paddle.Tensor, params: list, scaler: paddle.amp.GradScaler) -> bool:
    """Whether to apply this update: the loss and every gradient finite, on every rank.

    With fp16 on a GPU the GradScaler handles overflowing gradients itself (it skips that step and
    lowers the scale, as loss scaling intends); only a non-finite loss counts as a fault. A disabled
    scaler (float32, bfloat16, and Paddle disables it off GPUs) checks nothing, so the gradients are
    checked here.
    """
    checked = [loss] if scaler.is_enable() else [loss] + [p.grad for p in params if p.grad is not None]
    return not any_rank(not all_finite(checked))


@contextlib.contextmanager
def frozen(params: list):
    """No gradient for ``params`` inside the block (the discriminators during the G update)."""
    params = [p for p in params if not p.stop_gradient]
    for p in params:
        p.stop_gradient = True
    try:
        yield
    finally:
        for p in params:
            p.stop_gradient = False


def snapshot(buffers: list):
    """A callable that puts ``buffers`` back to their present values (the spectral-norm u/v, which
    every training-mode discriminator forward advances, when a step is skipped)."""
    saved = [(b, b.clone()) for b in buffers]

    def restore() -> None:
        for buffer, value in saved:
            buffer.set_value(value)
    return restore


class NonFiniteStreak:
    """Consecutive skipped steps: each is logged; ``limit`` in a row stop training with a message naming
    the last good checkpoint (``newest_checkpoint()``), which the skipped steps did not touch."""

    def __init__(self, limit: int, newest_checkpoint):
        self.limit, self.newest_checkpoint = limit, newest_checkpoint
        self.run = self.total = 0

    def record(self, step: int, losses: dict, skipped: bool) -> None:
        self.run = self.run + 1 if skipped else 0
        if not skipped:
            return
        self.total += 1
        log.warning('step %d: non-finite loss or gradient (D_loss %s, G_loss %s): update skipped (%d in a row, '
                    '%d this run)', step, losses['D_loss'], losses['G_loss'], self.run, self.total)
        if self.run >= self.limit:
            raise TrainingDiverged(
                f'{self.run} consecutive steps with non-finite losses or gradients (steps {step - self.run + 1}-{step}): '
                f'training stopped; the last good checkpoint is {self.newest_checkpoint() or "none (none was written)"}: '
                f'lower --lr or check the data, then --resume True')


def ignore_interrupt(worker_id: int) -> None:
    """Data-loading workers leave Ctrl-C (sent to the whole process group) to the trainer, which
    stops cleanly. SIGTERM stays: the DataLoader uses it to shut its workers down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class StopRequest:
    """Signal handler: the first SIGINT/SIGTERM asks for a clean stop at the end of the step
    (checkpoint, exit 0); a second one exits at once without saving."""

    def __init__(self):
        self.signal_name = None

    def __call__(self, signum, frame):
        name = signal.Signals(signum).name
        if self.signal_name is not None:
            log.warning('second %s: exiting at once without saving', name)
            raise SystemExit(130)
        self.signal_name = name
        log.warning('%s received: stopping after this step with a checkpoint (again to exit at once)', name)

    @contextlib.contextmanager
    def installed(self):
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for s in previous:
            signal.signal(s, self)
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
