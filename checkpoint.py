"""Checkpoint files: atomic writes, discovery, validation, fallback and pruning.

A checkpoint is one ``paddle.save``'d dict (see ``UGATIT.save``) at
``<result_dir>/<dataset>/model/<dataset>_params_%07d.pdparams`` (the official naming) or the rolling
``<dataset>_params_latest.pdparams``. Each has a small JSON sidecar ``<file>.json`` with its step,
byte size and architecture, written after the checkpoint itself: it orders checkpoints without
reading gigabytes and detects a truncated file by its size.

Writes go to a temporary file that is fsynced and renamed over the target, so a crash or
SIGKILL at any moment leaves the previous checkpoint intact.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import pickle
import re
import shutil
from typing import Iterator

import paddle

from utils import atomic_path, atomic_write

log = logging.getLogger('ugatit')

FORMAT = 'ugatit-paddle/1'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read, with what to do about it."""


class ArchitectureMismatch(CheckpointError):
    """A checkpoint built with other network arguments than the current ones."""


def checkpoint_name(dataset: str, step: int | None) -> str:
    """``<dataset>_params_%07d.pdparams`` (official naming), or ``..._latest.pdparams`` for step None."""
    return f'{dataset}_params_latest.pdparams' if step is None else f'{dataset}_params_{step:07d}.pdparams'


def sidecar(path: str) -> str:
    return path + '.json'


def _read_sidecar(path: str) -> dict | None:
    try:
        with open(sidecar(path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def list_checkpoints(model_dir: str, dataset: str) -> list[str]:
    """Periodic checkpoints of ``dataset`` in ``model_dir``, oldest first (by the step in the name)."""
    if not os.path.isdir(model_dir):
        return []
    pattern = re.compile(re.escape(dataset) + r'_params_(\d+)\.pdparams$')
    found = [(int(m.group(1)), name) for name in os.listdir(model_dir) if (m := pattern.match(name))]
    return [os.path.join(model_dir, name) for _, name in sorted(found)]


def _step_of(path: str) -> int:
    """The step of a checkpoint: from its sidecar, its name, or (last resort) its contents."""
    meta = _read_sidecar(path)
    if meta and 'step' in meta:
        return int(meta['step'])
    match = re.search(r'_params_(\d+)\.pdparams$', path)
    if match:
        return int(match.group(1))
    try:
        return int(paddle.load(path).get('step', -1))
    except Exception:                               # unreadable: sorted last, reported when loaded
        return -1


def candidates(model_dir: str, dataset: str) -> list[tuple[int, str]]:
    """Every checkpoint of ``dataset`` (periodic and latest) as (step, path), newest first."""
    paths = list_checkpoints(model_dir, dataset)
    latest = os.path.join(model_dir, checkpoint_name(dataset, None))
    if os.path.exists(latest):
        paths.append(latest)
    # On equal steps prefer the periodic file: it is written first and never overwritten.
    return sorted(((_step_of(p), p) for p in paths), key=lambda sp: (sp[0], not sp[1].endswith('_latest.pdparams')),
                  reverse=True)


class _TensorStreamPickler(pickle.Pickler):
    """Pickles a state tree as ``paddle.save`` does (tensors as numpy arrays, protocol 4, readable
    by ``paddle.load``) but one tensor at a time: each is copied to host memory only while it is
    written, and ``fast`` mode keeps no memo of the written bytes. ``paddle.save`` holds three
    copies of everything at once, which for the full model (8 GB of weights and Adam moments)
    does not fit in the RAM of a 32 GB machine.
    """

    def __init__(self, file):
        super().__init__(file, protocol=4)
        self.fast = True                 # the state is a tree: no memo needed

    def reducer_override(self, obj):
        if isinstance(obj, paddle.Tensor):
            return obj.numpy().__reduce__()
        return NotImplemented


def write_checkpoint(path: str, state: dict) -> int:
    """Serialise ``state`` and write it atomically, then its sidecar. Returns the byte size.

    Raises ``CheckpointError`` (the previous file at ``path`` is then untouched).
    """
    try:
        with atomic_path(path) as tmp:
            with open(tmp, 'wb') as f:
                _TensorStreamPickler(f).dump(state)
            size = os.path.getsize(tmp)
        meta = {'format': FORMAT, 'step': int(state.get('step', 0)), 'bytes': size,
                'arch': state.get('arch')}
        atomic_write(sidecar(path), json.dumps(meta, indent=1).encode())
    except OSError as e:
        reason = 'no space left on the device' if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise CheckpointError(f'could not write checkpoint {path}: {reason}; the previous checkpoint is '
                              f'intact: free space or fix permissions, then continue with --resume True') from None
    return size


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint, checking it is whole: its size against the sidecar, its keys.

    Raises ``CheckpointError`` naming the file when it is truncated or corrupt.
    """
    meta = _read_sidecar(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise CheckpointError(f'cannot read checkpoint {path}: {e.strerror}') from None
    if meta and 'bytes' in meta and meta['bytes'] != size:
        raise CheckpointError(f'checkpoint {path} is truncated ({size} of {meta["bytes"]} bytes)')
    try:
        state = paddle.load(path)
    except Exception as e:                          # the decoders raise many types on bad bytes
        raise CheckpointError(f'checkpoint {path} is corrupt ({type(e).__name__}: {e})') from None
    if not isinstance(state, dict):
        raise CheckpointError(f'checkpoint {path} is not a U-GAT-IT checkpoint (a {type(state).__name__})')
    return state


def iter_valid(model_dir: str, dataset: str) -> Iterator[tuple[str, dict]]:
    """(path, state) of the checkpoints that load, newest first; warns about each one that does not."""
    for _, path in candidates(model_dir, dataset):
        try:
            yield path, read_checkpoint(path)
        except CheckpointError as e:
            log.warning('%s: falling back to the previous checkpoint', e)


def prune(model_dir: str, dataset: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` periodic checkpoints (keep 0: delete none)."""
    if keep <= 0:
        return []
    removed = list_checkpoints(model_dir, dataset)[:-keep]
    for path in removed:
        for p in (path, sidecar(path)):
            if os.path.exists(p):
                os.remove(p)
    return removed


def check_writable(folder: str, need_bytes: int = 0) -> None:
    """Fail at start, not at the first save, when ``folder`` cannot take checkpoints.

    Creates the folder, writes and removes a probe file (one-line ``CheckpointError`` if that
    fails) and warns when the free space is smaller than ``need_bytes``.
    """
    probe = os.path.join(folder, f'.write_probe.{os.getpid()}')       # one per process: ranks probe at once
    try:
        os.makedirs(folder, exist_ok=True)
        atomic_write(probe, b'probe')
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(f'cannot write to {folder}: {e.strerror or e}: choose another --result_dir '
                              f'or fix its permissions') from None
    free = shutil.disk_usage(folder).free
    if need_bytes and free < need_bytes:
        log.warning('only %.2f GB free in %s but a checkpoint takes about %.2f GB (twice that while it '
                    'replaces the previous one): free space or use --keep_ckpt', free / 1e9, folder, need_bytes / 1e9)


def check_architecture(path: str, saved: dict | None, current: dict) -> None:
    """One-line ``ArchitectureMismatch`` naming every argument that differs from the checkpoint's."""
    if not saved:
        return
    differing = [f'--{k} {saved[k]} (checkpoint) vs {current[k]} (now)'
                 for k in current if k in saved and saved[k] != current[k]]
    if differing:
        raise ArchitectureMismatch(f'{path} was trained with other network arguments: ' + '; '.join(differing)
                                   + ': pass the checkpoint\'s values or another --result_dir')


def portable_optimizer_state(optim, names: dict[str, str]) -> dict:
    """The optimizer state with Paddle's run-specific parameter names replaced by stable ones.

    Paddle names accumulators after auto-generated parameter names ('conv2d_3.w_0_moment1_0'),
    which depend on how many layers the process built before; a checkpoint must not.
    ``names`` maps run-specific → stable ('genA2B.DownBlock.1.weight').
    """
    return {_rename(key, names): value for key, value in optim.state_dict().items()}


def load_portable_optimizer_state(optim, state: dict, names: dict[str, str]) -> None:
    """Inverse of ``portable_optimizer_state`` for this run's parameter names."""
    back = {stable: run for run, stable in names.items()}
    optim.set_state_dict({_rename(key, back): value for key, value in state.items()})


def _rename(key: str, names: dict[str, str]) -> str:
    owner = max((n for n in names if key.startswith(n + '_')), key=len, default=None)
    return key if owner is None else names[owner] + key[len(owner):]


def all_finite(tensors) -> bool:
    """True when no element of ``tensors`` is NaN or ±inf (one reduction, one sync)."""
    tensors = [t for t in tensors if t is not None]
    if not tensors:
        return True
    # Any NaN or ±inf makes the sum NaN or ±inf (finite values could only overflow at ~1e38).
    total = paddle.add_n([t.astype('float32').sum().reshape([]) for t in tensors])
    return bool(paddle.isfinite(total))
