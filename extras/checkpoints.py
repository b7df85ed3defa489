"""Checkpoint files: atomic writes, discovery, validation, fallback, pruning, one trainer per run.

A checkpoint is one pickled dict (see ``UGATIT.save``, readable by ``paddle.load``) at
``<result_dir>/<dataset>/model/<dataset>_params_%07d.pdparams`` (the official naming) or the rolling
``<dataset>_params_latest.pdparams``. Each has a small JSON sidecar ``<file>.json`` with its step,
byte size and architecture, written after the checkpoint itself: it orders checkpoints without
reading gigabytes, tells the architecture to test/eval/infer/export, and detects a truncated file.

Writes go to a temporary file that is fsynced and renamed over the target, so a crash or SIGKILL at
any moment leaves the previous checkpoint intact. What can and cannot be read:
* corrupt (truncated, garbage): skipped with a warning, the previous checkpoint is used;
* unreadable (permissions, I/O errors): an error, never skipped: the file is fine and would be
  overwritten by the next save of a run that fell back past it;
* checkpoint files exist but none loads: an error, never a silent start from step 1.
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import pickle
import re
import shutil
import socket
import tempfile
import time
from typing import Iterator

import paddle

from networks import DISCRIMINATORS
from utils import atomic_path, atomic_write

log = logging.getLogger('ugatit')

FORMAT = 'ugatit-paddle/1'
LOCK_FILE = '.train.lock'
CHECKPOINT_FILE = re.compile(r'(?P<dataset>.+)_params_(?P<step>\d+|latest)\.pdparams$')   # checkpoint_name's
_TEMPORARY = re.compile(r'^\..+\.[^.]+\.tmp$')          # utils.atomic_path's '.<name>.<random>.tmp'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be written or read, with what to do about it."""


class CheckpointUnreadable(CheckpointError):
    """A checkpoint file that exists but cannot be read (permissions, I/O): not corrupt."""


class ArchitectureMismatch(CheckpointError):
    """A checkpoint built with other network arguments than the ones given."""


def checkpoint_name(dataset: str, step: int | None) -> str:
    """``<dataset>_params_%07d.pdparams`` (official naming), or ``..._latest.pdparams`` for step None."""
    return f'{dataset}_params_latest.pdparams' if step is None else f'{dataset}_params_{step:07d}.pdparams'


def sidecar(path: str) -> str:
    return path + '.json'


def read_sidecar(path: str) -> dict | None:
    try:
        with open(sidecar(path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def list_checkpoints(model_dir: str, dataset: str) -> list[str]:
    """Periodic checkpoints of ``dataset`` in ``model_dir``, oldest first (by the step in the name)."""
    if not os.path.isdir(model_dir):
        return []
    found = [(int(m['step']), name) for name in os.listdir(model_dir)
             if (m := CHECKPOINT_FILE.match(name)) and m['dataset'] == dataset and m['step'] != 'latest']
    return [os.path.join(model_dir, name) for _, name in sorted(found)]


def _step_of(path: str) -> int:
    """The step of a checkpoint: from its sidecar, else its name; -1 (sorted last) if neither says."""
    meta = read_sidecar(path)
    if meta and 'step' in meta:
        return int(meta['step'])
    match = CHECKPOINT_FILE.match(os.path.basename(path))
    return int(match['step']) if match and match['step'] != 'latest' else -1


def candidates(model_dir: str, dataset: str) -> list[tuple[int, str]]:
    """Every checkpoint of ``dataset`` (periodic and latest) as (step, path), newest first."""
    paths = list_checkpoints(model_dir, dataset)
    latest = os.path.join(model_dir, checkpoint_name(dataset, None))
    if os.path.exists(latest):
        paths.append(latest)
    # On equal steps prefer the periodic file: it is written first and never overwritten.
    return sorted(((_step_of(p), p) for p in paths), key=lambda sp: (sp[0], not sp[1].endswith('_latest.pdparams')),
                  reverse=True)



def newest(model_dir: str, dataset: str) -> str | None:
    """The path of the checkpoint with the highest step, without loading any (None: there is none)."""
    found = candidates(model_dir, dataset)
    return found[0][1] if found else None


class LazyArray:
    """An array computed only while it is written (``write_checkpoint``): a converter can describe a
    checkpoint of gigabytes that never exists in memory at once."""

    def __init__(self, compute):
        self.compute = compute


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
        if isinstance(obj, LazyArray):
            return obj.compute().__reduce__()
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
        meta = {'format': FORMAT, 'step': int(state.get('step', 0)), 'bytes': size, 'arch': state.get('arch'),
                'demo': bool((state.get('args') or {}).get('demo'))}
        atomic_write(sidecar(path), json.dumps(meta, indent=1).encode())
    except OSError as e:
        raise CheckpointError(f'could not write checkpoint {path}: {os_reason(e)}; the previous checkpoint is '
                              f'intact: free space or fix permissions, then continue with --resume True') from None
    return size


def os_reason(error: OSError) -> str:
    return 'no space left on the device' if error.errno == errno.ENOSPC else (error.strerror or str(error))


def read_checkpoint(path: str) -> dict:
    """Load a checkpoint, checking it is whole: its size against the sidecar, its type.

    Raises ``CheckpointUnreadable`` when the file cannot be read and ``CheckpointError`` naming the
    file when it is truncated or corrupt.
    """
    meta = read_sidecar(path)
    try:
        size = os.path.getsize(path)
        with open(path, 'rb'):
            pass
    except FileNotFoundError:
        raise CheckpointError(f'checkpoint {path} does not exist') from None
    except OSError as e:
        raise CheckpointUnreadable(f'cannot read checkpoint {path}: {e.strerror}: fix its permissions '
                                   f'(it is not corrupt, so nothing falls back past it)') from None
    if meta and 'bytes' in meta and meta['bytes'] != size:
        raise CheckpointError(f'checkpoint {path} is truncated ({size} of {meta["bytes"]} bytes)')
    try:
        state = paddle.load(path)
    except Exception as e:                          # the decoders raise many types on bad bytes
        raise CheckpointError(f'checkpoint {path} is corrupt ({type(e).__name__}: {e})') from None
    if not isinstance(state, dict):
        raise CheckpointError(f'checkpoint {path} is not a U-GAT-IT checkpoint (a {type(state).__name__})')
    return state


def loadable(model_dir: str, dataset: str) -> Iterator[tuple[str, dict]]:
    """(path, state) of the checkpoints that load, newest first.

    A corrupt one is skipped with a warning; an unreadable one stops (``CheckpointUnreadable``);
    when checkpoint files exist and none loads, ``CheckpointError`` says so instead of the caller
    starting over.
    """
    problems = []
    for _, path in candidates(model_dir, dataset):
        try:
            state = read_checkpoint(path)
        except CheckpointUnreadable:
            raise
        except CheckpointError as e:
            log.warning('%s: falling back to the previous checkpoint', e)
            problems.append(str(e))
            continue
        yield path, state
    if problems:
        raise CheckpointError(f'none of the {len(problems)} checkpoints in {model_dir} loads ({problems[0]}'
                              + (f' and {len(problems) - 1} more' if len(problems) > 1 else '')
                              + '): move them away to start over, or use another --result_dir')


def _is_demo(path: str) -> bool:
    """Whether ``--demo`` wrote this checkpoint: its sidecar says so (a file from before sidecars
    recorded it: its arguments, or False when it does not load)."""
    meta = read_sidecar(path) or {}
    if 'demo' in meta:
        return bool(meta['demo'])
    try:
        return bool(read_checkpoint(path).get('args', {}).get('demo'))
    except CheckpointError:
        return False


def fresh_start(model_dir: str, dataset: str, replace_demo: bool = False) -> int:
    """0, the last step of a new run, after checking that no run would be overwritten: a folder that
    holds one is a one-line error (``--resume True`` continues it). With ``replace_demo`` (``--demo``)
    a previous demo run's checkpoints are deleted, and only when every one of them says it is a demo's."""
    found = candidates(model_dir, dataset)
    paths = [path for _, path in found]
    if found and replace_demo and all(map(_is_demo, paths)):
        log.warning('replacing the previous demo run in %s', model_dir)
        remove_checkpoints(paths)
    elif found:
        what = 'checkpoints that are not a demo\'s' if replace_demo else 'a run'
        raise CheckpointError(f'{model_dir} holds {what} (newest checkpoint: step {found[0][0]}): continue '
                              f'it with --resume True, or start a new one with another --result_dir')
    return 0


def saved_architecture(model_dir: str, dataset: str) -> tuple[str, dict] | None:
    """(path, arch) of the newest checkpoint, from its sidecar (its state for older files without
    one), or None when there is no checkpoint."""
    for _, path in candidates(model_dir, dataset):
        meta = read_sidecar(path)
        if meta and meta.get('arch'):
            return path, meta['arch']
        for path, state in loadable(model_dir, dataset):
            return path, state.get('arch') or {}
    return None


def weights_id(path: str) -> str:
    """Which weights a file holds now: its step, size and modification time (``latest`` keeps its
    name from save to save, so the name alone does not say)."""
    stat = os.stat(path)
    return f'{_step_of(path)}:{stat.st_size}:{stat.st_mtime_ns}'


def prune(model_dir: str, dataset: str, keep: int) -> list[str]:
    """Delete all but the newest ``keep`` periodic checkpoints (keep 0: delete none)."""
    if keep <= 0:
        return []
    return remove_checkpoints(list_checkpoints(model_dir, dataset)[:-keep])


def remove_checkpoints(paths: list[str]) -> list[str]:
    """Delete these checkpoints and their sidecars; returns ``paths``."""
    for path in paths:
        for p in (path, sidecar(path)):
            if os.path.exists(p):
                os.remove(p)
    return paths


def check_writable(folder: str, need_bytes: int = 0) -> None:
    """Fail at start, not at the first save, when ``folder`` cannot take checkpoints.

    Creates the folder and writes to an unnamed temporary file in it (one-line ``CheckpointError`` if
    that fails), then warns when the free space is smaller than ``need_bytes``. The probe has no name
    in the folder, so rank 0's ``remove_stale_temporaries`` cannot take another rank's probe for a
    killed write's leftover, and a process killed while probing leaves nothing behind.
    """
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as probe:
            probe.write(b'probe')
            probe.flush()
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
                                   + ': drop these flags (the checkpoint sets them) or use another --result_dir')


def remove_stale_temporaries(*folders: str) -> list[str]:
    """Delete the temporary files that a process killed during an atomic write left behind
    (``.<name>.<random>.tmp``, up to the size of a checkpoint each); returns what was removed."""
    removed = []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if _TEMPORARY.match(name) and os.path.isfile(path):
                os.remove(path)
                removed.append(path)
    return removed


class RunLock:
    """One trainer per run folder: an exclusive ``flock`` on ``<folder>/.train.lock``, released by the
    kernel when the process ends however it ends, so a lock left by a dead process is free again.
    The file names the holder (PID, host, start time) for the message a second trainer gets."""

    def __init__(self, folder: str):
        self.path = os.path.join(folder, LOCK_FILE)
        self.fd = None

    def acquire(self) -> RunLock:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 4096).decode(errors='replace').strip() or 'another process'
            os.close(fd)
            raise CheckpointError(f'{os.path.dirname(self.path)} is in use by a trainer ({holder}): wait for it '
                                  f'to stop, or use another --result_dir') from None
        os.ftruncate(fd, 0)
        os.write(fd, f'PID {os.getpid()} on {socket.gethostname()}, since {time.strftime("%Y-%m-%d %H:%M:%S")}'.encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)                 # closing the descriptor releases the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def state_bytes(params: list) -> int:
    """Bytes of the float32 values of ``params`` (a checkpoint holds them and Adam's two moments)."""
    return 4 * sum(int(math.prod(p.shape)) for p in params)


def check_state_shapes(path: str, name: str, net, state: dict) -> None:
    """Every key of ``net`` present in ``state`` with its shape, no other key (set_state_dict only warns)."""
    expected = net.state_dict()
    problems = [f'missing {k}' for k in expected if k not in state]
    problems += [f'unexpected {k}' for k in state if k not in expected]
    problems += [f'{k}: {list(state[k].shape)} vs {list(v.shape)}' for k, v in expected.items()
                 if k in state and list(state[k].shape) != list(v.shape)]
    if problems:
        raise CheckpointError(f'{path}: {name} does not fit this network: ' + ', '.join(problems[:8])
                              + (f' and {len(problems) - 8} more' if len(problems) > 8 else ''))


def training_state(networks: dict, optimizers: dict, scalers: dict) -> dict:
    """The networks' state dicts, the optimizers' states under stable parameter names, and the loss
    scalers' states when they are enabled (fp16): what a checkpoint holds besides its metadata."""
    state = {name: net.state_dict() for name, net in networks.items()}
    names = stable_names(networks)
    state.update({name: portable_optimizer_state(optim, names) for name, optim in optimizers.items()})
    state.update({name: scaler.state_dict() for name, scaler in scalers.items() if scaler.is_enable()})
    return state


def load_networks(path: str, state: dict, networks: dict, generators_only_ok: bool = False) -> None:
    """Set every network from ``state`` after checking its keys and shapes (one-line errors). A checkpoint
    holding the generators only (a TF test-phase one, or converted with --generators_only) loads when
    ``generators_only_ok`` (test, infer, export)."""
    for name, net in networks.items():
        if name not in state and name in DISCRIMINATORS and 'genA2B' in state:
            if generators_only_ok:
                continue
            raise CheckpointError(f'{path} holds the generators only (a TF test-phase checkpoint or convert.py '
                                  f'--generators_only): it tests, infers and exports; training needs a full one')
        if name not in state:
            raise CheckpointError(f'{path} has no {name}: not a U-GAT-IT checkpoint')
        check_state_shapes(path, name, net, state[name])
        net.set_state_dict(state[name])


def load_training_state(path: str, state: dict, networks: dict, optimizers: dict, scalers: dict) -> None:
    """Restore both optimizers (a fresh Adam, said in the log, when the checkpoint has none: converted
    PyTorch weights) and the enabled loss scalers."""
    if all(name in state for name in optimizers):
        names = stable_names(networks)
        for name, optim in optimizers.items():
            load_portable_optimizer_state(optim, state[name], names)
    else:
        log.info('%s holds no optimizer state (converted weights?): Adam starts fresh', path)
    for name, scaler in scalers.items():
        if scaler.is_enable() and name in state:
            scaler.load_state_dict(state[name])


def stable_names(networks: dict) -> dict[str, str]:
    """Every network's run-specific parameter names → stable names ('genA2B.DownBlock.1.weight')."""
    return {p.name: f'{name}.{key}' for name, net in networks.items() for key, p in net.named_parameters()}


def portable_optimizer_state(optim, names: dict[str, str]) -> dict:
    """An optimizer's state with Paddle's run-specific parameter names replaced by ``stable_names``:
    Paddle names accumulators after auto-generated parameter names ('conv2d_3.w_0_moment1_0'), which
    depend on how many layers the process built before."""
    return {_rename(key, names): value for key, value in optim.state_dict().items()}


def load_portable_optimizer_state(optim, state: dict, names: dict[str, str]) -> None:
    """Inverse of ``portable_optimizer_state`` for this run's parameter names."""
    back = {stable: run for run, stable in names.items()}
    optim.set_state_dict({_rename(key, back): value for key, value in state.items()})


def _rename(key: str, names: dict[str, str]) -> str:
    owner = max((n for n in names if key.startswith(n + '_')), key=len, default=None)
    return key if owner is None else names[owner] + key[len(owner):]
