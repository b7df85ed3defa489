"""Mixed precision (--amp off|bf16|fp16): paddle.amp's auto_cast O1 and, for fp16, loss scaling.

Normalisation statistics and losses stay float32 (networks.instance_layer_norm and the loss helpers
cast). Paddle applies auto_cast only on GPU/XPU devices: on the CPU training stays float32.
"""
from __future__ import annotations

import contextlib

import paddle


def autocast(mode: str):
    """``paddle.amp.auto_cast`` O1 in the mode's dtype, or nothing for 'off'."""
    if mode == 'off':
        return contextlib.nullcontext()
    return paddle.amp.auto_cast(level='O1', dtype='float16' if mode == 'fp16' else 'bfloat16')


def grad_scaler(mode: str) -> paddle.amp.GradScaler:
    """A loss scaler for fp16, disabled (a no-op: scale, step and update pass through) otherwise."""
    return paddle.amp.GradScaler(enable=mode == 'fp16', init_loss_scaling=2.0 ** 15)
