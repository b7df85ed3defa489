"""Training speed of this port beside the official PyTorch code, each run as a user runs it.

    python tools/bench.py                                          # ours: light, 128 px, ch 16, batch 1
    python tools/bench.py --reference ../UGATIT-pytorch            # ours and theirs, alternating (needs torch)
    python tools/bench.py --reference ../UGATIT-pytorch --threads 1              # both pinned to one thread
    python tools/bench.py --reference ../UGATIT-pytorch --img_size 256 --ch 64 --steps 3 --warmup 1
    python tools/bench.py --nproc 2                                # two data-parallel processes on the CPU

Each measurement is a fresh process running the whole training loop (`UGATIT.train`, and the official
`UGATIT.train` unmodified, both on the same generated images at `--img_size`, data loading included):
the time of each iteration after `--warmup` ones. Threads: with `--threads 0` (default) each framework
keeps its own default (what a user gets); `--threads N` sets OMP_NUM_THREADS=N for both. Output: one
JSON line per measurement (and `--out FILE`), then a table with the ratio ours / official per pair.
The official code calls `iterator.next()`, which DataLoader iterators lost in torch 1.13: the child
process gives them that alias back, nothing else of theirs is touched.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = 'BENCH_RESULT '


def cpu_description() -> str:
    """'AMD EPYC (2 cores; avx2, avx512f, amx)' from /proc/cpuinfo: what the numbers depend on."""
    with open('/proc/cpuinfo') as f:
        info = f.read()
    name = re.search(r'model name\s*:\s*(.+)', info).group(1).strip()
    flags = set(re.search(r'flags\s*:\s*(.+)', info).group(1).split())
    features = [f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_tile') if f in flags]
    return f'{name} ({os.cpu_count()} cores; {", ".join(features) or "no AVX2"})'


def dataset(root: str, img_size: int) -> str:
    """A small generated dataset at ``img_size`` (the demo's photos and cartoons)."""
    sys.path.insert(0, ROOT)
    from extras.demo_data import build_demo_dataset
    return build_demo_dataset(root, name='bench', size=img_size, n_train=16, n_test=2)


# --------------------------------------------------------------------------- #
# Children: one training run each, printing the iteration times
# --------------------------------------------------------------------------- #
def run_ours(spec: dict) -> list[float]:
    sys.path.insert(0, ROOT)
    import main
    from UGATIT import UGATIT
    stamps = []
    original = UGATIT.train_step

    def timed(self, real_A, real_B):
        stamps.append(time.perf_counter())
        return original(self, real_A, real_B)
    UGATIT.train_step = timed
    argv = ['--dataset', 'bench', '--data_root', spec['data_root'], '--result_dir', spec['result_dir'],
            '--light', str(spec['light']), '--img_size', str(spec['img_size']), '--ch', str(spec['ch']),
            '--iteration', str(spec['warmup'] + spec['steps'] + 1), '--print_freq', '100000', '--save_freq', '100000',
            '--latest_freq', '100000', '--num_workers', '0', '--device', 'cpu']
    main.setup_logging()
    main.run(main.parse_args(argv))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def run_official(spec: dict) -> list[float]:
    import torch
    import torch.utils.data.dataloader as loader
    loader._BaseDataLoaderIter.next = loader._BaseDataLoaderIter.__next__      # torch >= 1.13 dropped the alias
    sys.path.insert(0, spec['reference'])
    from UGATIT import UGATIT as Official
    args = argparse.Namespace(
        phase='train', light=spec['light'], dataset='bench', iteration=spec['warmup'] + spec['steps'] + 1,
        batch_size=1, print_freq=100000, save_freq=100000, decay_flag=True, lr=1e-4, weight_decay=1e-4,
        adv_weight=1, cycle_weight=10, identity_weight=10, cam_weight=1000, ch=spec['ch'], n_res=4, n_dis=6,
        img_size=spec['img_size'], img_ch=3, result_dir=spec['result_dir'], device='cpu', benchmark_flag=False,
        resume=False)
    for sub in ('model', 'img', 'test'):
        os.makedirs(os.path.join(spec['result_dir'], 'bench', sub), exist_ok=True)
    os.chdir(os.path.dirname(spec['data_root']))                  # their code reads dataset/<name>/ from the cwd
    gan = Official(args)
    gan.build_model()
    lines = []
    stdout, sys.stdout = sys.stdout, type('Capture', (), {'write': lambda self, s: lines.append(s), 'flush': lambda self: None})()
    try:
        gan.train()                                                # prints '[step/iter] time: elapsed ...' each step
    finally:
        sys.stdout = stdout
    elapsed = [float(t) for t in re.findall(r'time: *([\d.]+)', ''.join(lines))]
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads', file=sys.stderr)
    return [b - a for a, b in zip(elapsed, elapsed[1:])]


def child(spec: dict) -> None:
    times = (run_official if spec['impl'] == 'official' else run_ours)(spec)[spec['warmup']:]
    import resource
    print(RESULT + json.dumps({'times': times, 'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))


# --------------------------------------------------------------------------- #
# The parent: alternate, collect, tabulate
# --------------------------------------------------------------------------- #
def measure(spec: dict, threads: int, nproc: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}
    if threads:
        env['OMP_NUM_THREADS'] = str(threads)
    command = [sys.executable, os.path.abspath(__file__), '--child', json.dumps(spec)]
    if nproc > 1:
        command = [sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', str(nproc),
                   '--log_dir', os.path.join(spec['result_dir'], 'launch')] + command[1:]
    run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    found = [line for line in (run.stdout + _rank0_log(spec)).splitlines() if line.startswith(RESULT)]
    if run.returncode or not found:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ['no output']
        return {**spec, 'error': tail[0]}
    result = json.loads(found[-1][len(RESULT):])
    times = result.pop('times')
    return {**spec, 'threads': threads or 'default', 'nproc': nproc, 'median_s': statistics.median(times),
            'min_s': min(times), 'images_per_s': nproc / statistics.median(times), **result}


def _rank0_log(spec: dict) -> str:
    path = os.path.join(spec['result_dir'], 'launch', 'workerlog.0')
    return open(path).read() if os.path.exists(path) else ''


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--reference', help='a checkout of znxlwm/UGATIT-pytorch, to time the official code too (needs torch)')
    p.add_argument('--light', default='True', choices=['True', 'False'])
    p.add_argument('--img_size', type=int, default=128)
    p.add_argument('--ch', type=int, default=16)
    p.add_argument('--steps', type=int, default=10, help='timed iterations per measurement')
    p.add_argument('--warmup', type=int, default=3, help='iterations before the timed ones')
    p.add_argument('--repeats', type=int, default=2, help='measurements per implementation, alternating')
    p.add_argument('--threads', type=int, default=0, help='OMP_NUM_THREADS for both (0: each framework\'s default)')
    p.add_argument('--nproc', type=int, default=1, help='data-parallel processes for ours (paddle.distributed.launch)')
    p.add_argument('--out', help='append the JSON lines to this file')
    p.add_argument('--child', help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    print(f'# {cpu_description()}; {time.strftime("%Y-%m-%d")}', flush=True)
    records = []
    with tempfile.TemporaryDirectory(prefix='ugatit-bench-') as scratch:
        data_root = os.path.dirname(dataset(os.path.join(scratch, 'dataset'), args.img_size))
        impls = ['ours', 'official'] if args.reference else ['ours']
        for repeat in range(args.repeats):
            for impl in impls:
                spec = dict(impl=impl, light=args.light == 'True', img_size=args.img_size, ch=args.ch,
                            steps=args.steps, warmup=args.warmup, data_root=data_root,
                            result_dir=os.path.join(scratch, f'{impl}{repeat}'), reference=args.reference)
                record = measure(spec, args.threads, args.nproc if impl == 'ours' else 1)
                record = {k: v for k, v in record.items() if k not in ('data_root', 'result_dir')}
                records.append(record)
                print(json.dumps(record), flush=True)
                if args.out:
                    with open(args.out, 'a') as f:
                        f.write(json.dumps(record) + '\n')
    print(table(records))
    if any('error' in r for r in records):
        sys.exit(1)


def table(records: list[dict]) -> str:
    rows = ['| impl | threads | procs | s/iteration (median, min) | images/s | peak RSS GB |', '|---|---|---|---|---|---|']
    for r in records:
        rows.append(f'| {r["impl"]} | {r.get("threads", "?")} | {r.get("nproc", 1)} | '
                    + (f'{r["median_s"]:.3f}, {r["min_s"]:.3f} | {r["images_per_s"]:.2f} | {r["peak_rss_gb"]:.2f} |'
                       if 'median_s' in r else f'failed: {r["error"]} | | |'))
    ours = [r['median_s'] for r in records if r['impl'] == 'ours' and 'median_s' in r]
    theirs = [r['median_s'] for r in records if r['impl'] == 'official' and 'median_s' in r]
    if ours and theirs:
        ratios = [a / b for a, b in zip(ours, theirs)]
        rows.append(f'\nours / official per pair: {", ".join(f"{x:.2f}" for x in ratios)}; '
                    f'median {statistics.median(ratios):.2f}')
    return '\n'.join(rows)


if __name__ == '__main__':
    main()
