"""Data parallelism with paddle.distributed fleet, checked on the CPU (gloo) with real launches.

2 processes × batch 1 train like 1 process × batch 2 on the same images, with the normal augmentation
(each sample's flip and crop come from (seed, sample number), not from the process that loads it):
the inputs are identical, the ranks bit-identical, and the weights equal up to float reordering.
Not bit for bit: the CPU instance norm rounds differently at batch 1 and 2 (~1e-7), and Adam's first
steps (≈ lr·sign(g)) turn a near-zero gradient whose sign the rounding flips into a ±lr move; so the
test bounds how many weights may differ and by how much. Spectral-norm u/v and ρ (started outside
[0, 1] so the clipper acts) are part of the comparison.
"""
import os
import subprocess
import sys

import numpy as np

import pytest

from conftest import ROOT, tiny_argv

pytestmark = pytest.mark.slow
LR, STEPS = 1e-4, 4

WORKER = os.path.join(ROOT, 'tests', 'dist_worker.py')


def train_args(tmp_path, data_root, name, batch, *extra):
    """A tiny 4-step run writing to tmp_path/name; later flags in ``extra`` win."""
    return tiny_argv(tmp_path / name, data_root, '--iteration', '4', '--batch_size', str(batch),
                     '--print_freq', '2', '--latest_freq', '2', *extra)


def launch(tmp_path, nproc, args, out, env=None):
    command = [sys.executable, '-m', 'paddle.distributed.launch', '--nproc_per_node', str(nproc),
               '--log_dir', str(tmp_path / 'launch_log'), WORKER, str(out)] + args
    return subprocess.run(command, cwd=str(tmp_path), capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def test_two_processes_of_batch_1_equal_one_process_of_batch_2(tmp_path, tiny_data):
    env = {'UGATIT_RHO_OUTSIDE': '1'}
    two = launch(tmp_path, 2, train_args(tmp_path, tiny_data, 'two', 1), tmp_path / 'two_out', env)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    one = subprocess.run([sys.executable, WORKER, str(tmp_path / 'one_out')] + train_args(tmp_path, tiny_data, 'one', 2),
                         capture_output=True, text=True, timeout=600, env={**os.environ, **env})
    assert one.returncode == 0, one.stderr[-3000:]

    rank0, rank1 = np.load(tmp_path / 'two_out' / 'rank0.npz'), np.load(tmp_path / 'two_out' / 'rank1.npz')
    single = np.load(tmp_path / 'one_out' / 'rank0.npz')
    weights = [k for k in single.files if not k.startswith('input/')]
    assert set(rank0.files) == set(rank1.files) and len(weights) > 100
    assert any(k.endswith('weight_u') for k in weights) and any(k.endswith('rho') for k in weights)
    for k in rank0.files:
        if not k.startswith('input/'):
            np.testing.assert_array_equal(rank0[k], rank1[k], err_msg=f'ranks differ: {k}')
    for step in range(1, STEPS + 1):                             # rank r took sample r of the global batch
        for domain in 'AB':
            key = f'input/{domain}/{step}'
            np.testing.assert_array_equal(np.concatenate([rank0[key], rank1[key]]), single[key], err_msg=key)
    differences = np.concatenate([np.abs(rank0[k] - single[k]).ravel() for k in weights])
    assert np.isfinite(differences).all()
    flipped = differences > 1e-5
    assert differences.max() <= 2 * LR * STEPS, differences.max()        # at most a flipped Adam step each step
    assert flipped.mean() <= 1e-3, (flipped.sum(), differences.size)      # on a few near-zero gradients only
    print(f'2x1 vs 1x2: {flipped.sum()} of {differences.size} values differ by more than 1e-5, '
          f'at most {differences.max():.2e}')
    rho = np.concatenate([single[k].ravel() for k in single.files if k.endswith('rho')])
    assert rho.min() == 0.0 and rho.max() == 1.0                 # the clipper acted on -0.2 and 1.2
    # Only rank 0 wrote checkpoints and grids, in its own result folder.
    assert sorted(os.listdir(tmp_path / 'two' / 'tiny' / 'img')) == \
        ['A2B_0000002.png', 'A2B_0000004.png', 'B2A_0000002.png', 'B2A_0000004.png']


def test_a_failed_rank_ends_the_job_with_its_error(tmp_path, tiny_data):
    env = {'UGATIT_FAIL_RANK': '1', 'UGATIT_FAIL_STEP': '2'}
    run = launch(tmp_path, 2, train_args(tmp_path, tiny_data, 'fail', 1) + ['--iteration', '50'],
                 tmp_path / 'fail_out', env)
    assert run.returncode != 0
    # The launcher stops every process; the failing rank's traceback is in its worker log (and on
    # the console when the launcher notices it before its peers do; with gloo a peer often aborts
    # first on the broken connection, and its log is the one shown).
    rank_log = (tmp_path / 'launch_log' / 'workerlog.1').read_text()
    assert 'RuntimeError: injected failure on rank 1 at step 2' in rank_log
    assert 'Container failed' in run.stdout + run.stderr
    assert not (tmp_path / 'fail_out').exists()


def test_every_rank_resumes_from_the_same_checkpoint(tmp_path, tiny_data):
    """2 steps under a 2-process launch, then --resume to 4: bit-identical to 4 uninterrupted steps."""
    def args(name, iteration, *extra):
        return train_args(tmp_path, tiny_data, name, 1, '--iteration', str(iteration), '--decay_flag', 'False',
                          '--print_freq', '100', *extra)
    first = launch(tmp_path, 2, args('two', 2), tmp_path / 'first_out')
    assert first.returncode == 0, first.stdout[-3000:]
    resumed = launch(tmp_path, 2, args('two', 4, '--resume', 'True'), tmp_path / 'resumed_out')
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert 'resumed from' in resumed.stdout and 'at step 2' in resumed.stdout
    straight = launch(tmp_path, 2, args('straight', 4), tmp_path / 'straight_out')
    assert straight.returncode == 0, straight.stdout[-3000:]
    ranks = [np.load(tmp_path / 'resumed_out' / f'rank{r}.npz') for r in (0, 1)]
    uninterrupted = np.load(tmp_path / 'straight_out' / 'rank0.npz')
    for k in ranks[0].files:                           # the weights, and rank 0's inputs of steps 3 and 4
        if not k.startswith('input/'):
            np.testing.assert_array_equal(ranks[0][k], ranks[1][k], err_msg=f'ranks differ: {k}')
        np.testing.assert_array_equal(ranks[0][k], uninterrupted[k], err_msg=f'resumed run differs: {k}')
    assert {'input/A/3', 'input/B/4'} <= set(ranks[0].files)
