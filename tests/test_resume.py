"""Never lose a run: exact resume, one trainer per run, no silent restart, clean stops on signals,
crash-safe saves, fallbacks that never destroy a readable checkpoint, NaN and disk guards."""
import errno
import json
import math
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import paddle
import pytest

import dataset
import main
import UGATIT as ugatit_module
from conftest import ROOT, TINY, build, cli, one_line_error, tiny_argv
from extras import checkpoints as ckpt
from extras.checkpoints import CheckpointError
from networks import NETWORKS
from UGATIT import UGATIT



def flat_state(path):
    """Every tensor of a checkpoint (networks and optimizers) as numpy, keyed by a path; and the state."""
    state = paddle.load(str(path))
    out = {f'{part}/{k}': np.asarray(v.numpy() if hasattr(v, 'numpy') else v)
           for part in NETWORKS + ('G_optim', 'D_optim') for k, v in state[part].items() if hasattr(v, 'shape')}
    return out, state


def latest(run):
    return run / 'model' / 'tiny_params_latest.pdparams'


def stop_with_signal_after(monkeypatch, step, signum=signal.SIGTERM):
    """Send a real signal to this process once ``step`` steps have run."""
    original = UGATIT.train_step

    def train_step(self, real_A, real_B):
        losses = original(self, real_A, real_B)
        if self.start_step + 1 == step:
            os.kill(os.getpid(), signum)
        return losses
    monkeypatch.setattr(UGATIT, 'train_step', train_step)


# --------------------------------------------------------------------------- #
# Exact resume
# --------------------------------------------------------------------------- #
def test_resume_is_bit_exact(tmp_path, tiny_data, monkeypatch):
    """4 steps in one run == 2 steps, a stop (real SIGTERM), and --resume for 2 more: bit for bit."""
    common = ['--iteration', '4', '--print_freq', '100', '--save_freq', '100', '--latest_freq', '100']
    one = cli(tmp_path / 'one', tiny_data, *common)
    with monkeypatch.context() as m:
        stop_with_signal_after(m, 2)
        two = cli(tmp_path / 'two', tiny_data, *common)
    stopped, state = flat_state(latest(two))
    assert state['step'] == 2
    cli(tmp_path / 'two', tiny_data, *common, '--resume', 'True')
    a, state_a = flat_state(latest(one))
    b, state_b = flat_state(latest(two))
    assert state_a['step'] == state_b['step'] == 4
    assert a.keys() == b.keys() and len(a) > 100
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # the check can fail: the state after 2 steps differs from the state after 4
    assert any(not np.array_equal(a[k], stopped[k]) for k in a if k.startswith('genA2B'))


def test_resume_takes_the_architecture_from_the_checkpoint(tmp_path, tiny_data, caplog):
    """--resume True alone continues a run trained with other architecture flags."""
    cli(tmp_path, tiny_data, '--iteration', '1', '--ch', '8')
    main.main(['--dataset', 'tiny', '--data_root', str(tiny_data), '--result_dir', str(tmp_path / 'results'),
               '--device', 'cpu', '--num_workers', '0', '--iteration', '2', '--resume', 'True'])
    assert 'resumed from' in caplog.text
    assert paddle.load(str(latest(tmp_path / 'results' / 'tiny')))['arch']['ch'] == 8


def test_architecture_flags_that_disagree_are_one_line(tmp_path, tiny_data):
    cli(tmp_path, tiny_data, '--iteration', '1')
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '2', '--resume', 'True', '--ch', '8', '--light', 'False')
    message = one_line_error(e)
    assert '--light True (checkpoint) vs False (given)' in message and '--ch 4 (checkpoint) vs 8 (given)' in message


def test_weights_without_optimizer_state_resume_with_fresh_adam(tmp_path, tiny_data, caplog):
    run = cli(tmp_path, tiny_data, '--iteration', '1')
    state = paddle.load(str(latest(run)))
    ckpt.write_checkpoint(str(latest(run)), {k: state[k] for k in NETWORKS + ('step', 'arch')})
    cli(tmp_path, tiny_data, '--iteration', '2', '--resume', 'True')
    assert 'holds no optimizer state (converted weights?): Adam starts fresh' in caplog.text
    assert paddle.load(str(latest(run)))['step'] == 2


# --------------------------------------------------------------------------- #
# Nothing replaced without being asked
# --------------------------------------------------------------------------- #
def test_training_again_without_resume_refuses_to_replace_the_run(tmp_path, tiny_data):
    run = cli(tmp_path, tiny_data, '--iteration', '3')
    before = latest(run).read_bytes()
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '10', '--latest_freq', '1')
    message = one_line_error(e)
    assert 'holds a run (newest checkpoint: step 3)' in message and '--resume True' in message
    assert latest(run).read_bytes() == before


@pytest.mark.parametrize('demo', [True, False])
def test_the_demo_replaces_only_a_previous_demo_run(tmp_path, demo):
    """``--demo`` again deletes the previous demo's checkpoints, leaving the folder for its own; the
    checkpoints of a run that is not a demo's are never deleted."""
    paths = [str(tmp_path / f'x_params_{name}.pdparams') for name in ('0000002', 'latest')]
    for path in paths:
        ckpt.write_checkpoint(path, {'step': 2, 'args': {'demo': demo}})
    meta = json.loads(open(ckpt.sidecar(paths[0])).read())
    del meta['demo']                                          # as written before sidecars recorded it
    open(ckpt.sidecar(paths[0]), 'w').write(json.dumps(meta))
    if demo:
        assert ckpt.fresh_start(str(tmp_path), 'x', replace_demo=True) == 0
        assert os.listdir(tmp_path) == []                     # the folder stays, emptied of checkpoints
    else:
        with pytest.raises(CheckpointError, match="holds checkpoints that are not a demo's"):
            ckpt.fresh_start(str(tmp_path), 'x', replace_demo=True)
        assert all(ckpt.read_checkpoint(path)['step'] == 2 for path in paths)


def test_an_unreadable_checkpoint_stops_resume_and_stays(tmp_path, tiny_data, monkeypatch):
    """Unreadable (permissions, I/O) is not corrupt: no fallback, no restart, nothing overwritten."""
    run = cli(tmp_path, tiny_data, '--iteration', '2', '--save_freq', '1')
    before = {p: p.read_bytes() for p in (run / 'model').iterdir()}
    real_open = open

    def denied(path, *args, **kwargs):                  # root reads any file: simulate EACCES
        if str(path).endswith('tiny_params_0000002.pdparams'):     # the newest (preferred to latest at step 2)
            raise PermissionError(errno.EACCES, 'Permission denied', str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(ckpt, 'open', denied, raising=False)
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '4', '--resume', 'True')
    message = one_line_error(e)
    assert 'cannot read checkpoint' in message and 'Permission denied' in message and 'not corrupt' in message
    assert {p: p.read_bytes() for p in (run / 'model').iterdir()} == before


def test_a_missing_checkpoint_is_named_as_missing(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="does not exist") as e:
        ckpt.read_checkpoint(str(tmp_path / 'tiny_params_latest.pdparams'))
    assert not isinstance(e.value, ckpt.CheckpointUnreadable)      # not 'fix its permissions'


@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
def test_corrupt_newest_checkpoint_falls_back(tmp_path, tiny_data, damage, caplog):
    run = cli(tmp_path, tiny_data, '--iteration', '3', '--save_freq', '2', '--latest_freq', '100')
    data = latest(run).read_bytes()
    latest(run).write_bytes(data[:len(data) // 2] if damage == 'truncate' else b'\0' * len(data))
    gan = build(tmp_path, '--resume', 'True')
    assert gan.resume_latest() == 2
    assert 'tiny_params_latest.pdparams' in caplog.text and 'falling back' in caplog.text


def test_no_loadable_checkpoint_left_is_an_error_not_a_restart(tmp_path, tiny_data):
    run = cli(tmp_path, tiny_data, '--iteration', '1')
    latest(run).write_bytes(b'\0' * 100)
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '3', '--resume', 'True')
    assert 'none of the 1 checkpoints' in one_line_error(e) and 'move them away' in str(e.value.code)
    assert latest(run).read_bytes() == b'\0' * 100


def test_one_trainer_per_run_folder(tmp_path, tiny_data):
    run = tmp_path / 'results' / 'tiny'
    with ckpt.RunLock(str(run)):                       # another trainer holds the folder
        with pytest.raises(SystemExit) as e:
            cli(tmp_path, tiny_data, '--iteration', '1')
    message = one_line_error(e)
    assert f'is in use by a trainer (PID {os.getpid()} on ' in message
    # The lock of a process that ended is free again, whatever its file still says.
    assert 'PID' in (run / ckpt.LOCK_FILE).read_text()
    cli(tmp_path, tiny_data, '--iteration', '1')
    assert latest(run).exists()


def test_temporaries_of_a_killed_save_are_removed_at_start(tmp_path, tiny_data, caplog):
    run = cli(tmp_path, tiny_data, '--iteration', '1')
    leftover = run / 'model' / '.tiny_params_latest.pdparams.x1y2z3.tmp'
    leftover.write_bytes(b'half a checkpoint')
    half_grid = run / 'img' / '.A2B_0000001.png.a1b2c3.tmp'
    half_grid.write_bytes(b'half an image')
    cli(tmp_path, tiny_data, '--iteration', '2', '--resume', 'True')
    for path in (leftover, half_grid):
        assert not path.exists() and f'removed {path}' in caplog.text


# --------------------------------------------------------------------------- #
# Signals and kills: real processes
# --------------------------------------------------------------------------- #
@pytest.fixture
def training(tmp_path, tiny_data):
    """Starts a 100,000-step tiny training process; whatever happens, it is killed at teardown."""
    procs = []

    def start(*extra):
        argv = [sys.executable, os.path.join(ROOT, 'main.py')] + TINY + [
            '--dataset', 'tiny', '--data_root', str(tiny_data), '--result_dir', str(tmp_path / 'results'),
            '--iteration', '100000', '--print_freq', '10', '--latest_freq', '100000', '--save_freq', '100000',
            *extra]
        procs.append(subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        return procs[-1]
    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def wait_for_output(proc, needle: str, limit: float = 300) -> str:
    """The process's output until ``needle`` appears, it exits, or ``limit`` seconds pass."""
    text, deadline, fd = '', time.time() + limit, proc.stdout.fileno()
    while needle not in text:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        chunk = os.read(fd, 65536) if ready else b''
        if not chunk:
            break
        text += chunk.decode(errors='replace')
    return text


@pytest.mark.slow
@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_exits_zero(tmp_path, training, signum):
    proc = training('--num_workers', '1')
    assert '[      2/' in wait_for_output(proc, '[      2/'), 'training did not start'
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    name = signal.Signals(signum).name
    step = int(out.split(f'stopped by {name} at step ')[1].split(':')[0])
    assert paddle.load(str(latest(tmp_path / 'results' / 'tiny')))['step'] == step >= 2
    assert 'Traceback' not in out


@pytest.mark.slow
def test_a_second_trainer_is_refused_while_the_first_runs(tmp_path, training, tiny_data):
    proc = training()
    assert '[      2/' in wait_for_output(proc, '[      2/'), 'training did not start'
    second = subprocess.run([sys.executable, os.path.join(ROOT, 'main.py')] + tiny_argv(
        tmp_path / 'results', tiny_data, '--iteration', '5', '--resume', 'True'), cwd=ROOT, capture_output=True,
        text=True, timeout=300)
    assert second.returncode == 1 and f'in use by a trainer (PID {proc.pid} on ' in second.stderr, second.stderr
    assert 'Traceback' not in second.stderr


SECOND_CTRL_C = r'''
import os, signal, sys, time
sys.path.insert(0, {root!r})
import main
from UGATIT import UGATIT
original = UGATIT.train_step
def train_step(self, real_A, real_B):
    if self.start_step + 1 == 2:                 # two Ctrl-C inside step 2, before it ends
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    return original(self, real_A, real_B)
UGATIT.train_step = train_step
main.main({argv!r})
'''


@pytest.mark.slow
def test_second_ctrl_c_exits_at_once_without_saving(tmp_path, tiny_data):
    argv = tiny_argv(tmp_path / 'results', tiny_data, '--iteration', '10', '--latest_freq', '100')
    proc = subprocess.run([sys.executable, '-c', SECOND_CTRL_C.format(root=ROOT, argv=argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert 'SIGINT received: stopping after this step' in proc.stderr
    assert 'exiting at once without saving' in proc.stderr and 'Traceback' not in proc.stderr
    assert not latest(tmp_path / 'results' / 'tiny').exists()


KILL_DURING_SAVE = r'''
import os, signal, sys
sys.path.insert(0, {root!r})
import utils
from main import parse_args
from UGATIT import UGATIT
gan = UGATIT(parse_args({argv!r}))
gan.build_model()
gan.save({path!r}, step=1)
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
utils.os.{where} = die
gan.genA2B.gamma.weight.set_value(gan.genA2B.gamma.weight * 2)
gan.save({path!r}, step=2)
'''


@pytest.mark.slow
@pytest.mark.parametrize('where', ['fsync', 'replace'])
def test_sigkill_during_save_leaves_previous_checkpoint(tmp_path, where):
    """SIGKILL after the new bytes are written but before they are synced / renamed into place."""
    path = str(tmp_path / 'x_params_latest.pdparams')
    script = KILL_DURING_SAVE.format(root=ROOT, argv=TINY + ['--dataset', 'x', '--result_dir', str(tmp_path)],
                                     path=path, where=where)
    proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert ckpt.read_checkpoint(path)['step'] == 1
    leftovers = [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]       # the interrupted write's leftover
    assert leftovers and ckpt.candidates(str(tmp_path), 'x') == [(1, path)]   # which nothing takes for a checkpoint
    assert ckpt.remove_stale_temporaries(str(tmp_path)) == [str(tmp_path / n) for n in leftovers]


# --------------------------------------------------------------------------- #
# Numerical faults
# --------------------------------------------------------------------------- #
def params_of(gan, *names):
    nets = gan.networks()
    return {f'{n}.{k}': v.numpy().copy() for n in names for k, v in nets[n].state_dict().items()}


def test_nonfinite_d_loss_updates_nothing(tmp_path):
    gan = build(tmp_path)
    before = params_of(gan, *NETWORKS)
    real = paddle.zeros([1, 3, 96, 96])
    losses = gan.train_step(real * math.nan, real)
    assert math.isnan(losses['D_loss']) and gan.nonfinite_steps == 1
    after = params_of(gan, *NETWORKS)
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert gan.train_step(real, real)['G_loss'] > 0                        # and the next step runs normally


def test_nonfinite_g_loss_skips_the_g_update(tmp_path, monkeypatch):
    gan = build(tmp_path)
    before_g, before_d = params_of(gan, 'genA2B', 'genB2A'), params_of(gan, 'disGA')
    monkeypatch.setattr(ugatit_module, 'l1', lambda x, y: (x - y).abs().mean() * math.inf)
    real = paddle.zeros([1, 3, 96, 96])
    losses = gan.train_step(real, real)
    assert math.isfinite(losses['D_loss']) and not math.isfinite(losses['G_loss'])
    after_g, after_d = params_of(gan, 'genA2B', 'genB2A'), params_of(gan, 'disGA')
    for k in before_g:
        np.testing.assert_array_equal(before_g[k], after_g[k], err_msg=k)
    assert any(not np.array_equal(before_d[k], after_d[k]) for k in before_d)
    assert all(not p.stop_gradient for p in gan.disGA.parameters())          # D unfrozen again


def test_consecutive_nonfinite_steps_stop_training_keeping_last_good(tmp_path, tiny_data, monkeypatch):
    original = UGATIT.train_step

    def poisoned(self, real_A, real_B):
        return original(self, real_A * math.nan if self.start_step >= 2 else real_A, real_B)
    monkeypatch.setattr(UGATIT, 'train_step', poisoned)
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '20', '--latest_freq', '1', '--save_freq', '2', '--max_nan_steps', '3')
    message = one_line_error(e)
    assert '3 consecutive steps with non-finite losses or gradients (steps 3-5)' in message
    model = tmp_path / 'results' / 'tiny' / 'model'
    assert str(model / 'tiny_params_0000004.pdparams') in message          # the newest, equal to latest
    # The checkpoints written during the streak hold the last good weights, untouched by the skipped steps.
    good = ckpt.read_checkpoint(str(model / 'tiny_params_0000002.pdparams'))
    newest = ckpt.read_checkpoint(str(model / 'tiny_params_latest.pdparams'))
    assert newest['step'] == 4
    for net in NETWORKS:
        for k, v in good[net].items():
            np.testing.assert_array_equal(newest[net][k].numpy(), v.numpy(), err_msg=f'{net}.{k}')


def test_nonfinite_g_gradient_with_finite_losses_counts_as_skipped(tmp_path, tiny_data, monkeypatch):
    """A NaN gradient behind finite losses skips the update, and these skips stop training too."""
    original = UGATIT.build_model

    def poisoned(self):
        original(self)
        self.genA2B.gamma.weight.register_hook(lambda grad: grad * math.nan)
    monkeypatch.setattr(UGATIT, 'build_model', poisoned)
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '20', '--max_nan_steps', '2')
    assert '2 consecutive steps with non-finite losses or gradients (steps 1-2)' in one_line_error(e)


def test_nonfinite_parameters_are_never_saved(tmp_path, caplog):
    gan = build(tmp_path)
    path = str(tmp_path / 'ckpt.pdparams')
    gan.genA2B.gamma.weight.set_value(gan.genA2B.gamma.weight * math.nan)
    gan.save(path, step=1)
    assert not os.path.exists(path) and 'not finite' in caplog.text


# --------------------------------------------------------------------------- #
# Disk and data
# --------------------------------------------------------------------------- #
def test_unwritable_result_dir_is_a_one_line_error_at_start(tmp_path, tiny_data):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(SystemExit) as e:
        main.main(tiny_argv(blocker, tiny_data, '--iteration', '1'))
    message = one_line_error(e)
    assert 'cannot write to' in message and '--result_dir' in message


def test_rank_0_cleaning_temporaries_never_breaks_another_ranks_write_check(tmp_path):
    """At a launch every rank checks the shared result folder while rank 0 removes killed writes'
    leftovers there: no rank's check may look like a leftover (a CI launch once failed so)."""
    import threading
    stop, removed = threading.Event(), []

    def rank_0_cleaning():
        while not stop.is_set():
            removed.extend(ckpt.remove_stale_temporaries(str(tmp_path)))

    cleaner = threading.Thread(target=rank_0_cleaning, daemon=True)
    cleaner.start()
    try:
        for _ in range(300):
            ckpt.check_writable(str(tmp_path))
    finally:
        stop.set()
        cleaner.join()
    assert removed == [] and os.listdir(tmp_path) == []


def test_disk_full_at_save_stops_with_previous_checkpoint_intact(tmp_path, tiny_data, monkeypatch):
    real_dump, calls = ckpt._TensorStreamPickler.dump, []

    def full_disk(self, state):
        calls.append(state['step'])
        if len(calls) > 1:                                   # the first checkpoint fits, the second not
            real_dump(self, {'partial': state['genA2B']})         # some bytes reach the disk
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_dump(self, state)
    monkeypatch.setattr(ckpt._TensorStreamPickler, 'dump', full_disk)
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '4', '--latest_freq', '1')
    message = one_line_error(e)
    assert 'no space left on the device' in message and 'previous checkpoint is intact' in message
    model = tmp_path / 'results' / 'tiny' / 'model'
    assert ckpt.read_checkpoint(str(model / 'tiny_params_latest.pdparams'))['step'] == 1
    assert not [n for n in os.listdir(model) if n.endswith('.tmp')]          # the partial file is removed


def test_disk_full_while_writing_a_sample_grid_leaves_no_partial_png(tmp_path, tiny_data, monkeypatch):
    real_open = open

    class Full:
        def __init__(self, path):
            self.file = real_open(path, 'wb')

        def write(self, data):
            self.file.write(data[:10])                     # a few bytes land, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(dataset, 'open', lambda path, mode='r': Full(path) if mode == 'wb' else real_open(path, mode),
                        raising=False)
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '4', '--print_freq', '2', '--latest_freq', '1')
    message = one_line_error(e)
    assert 'could not write' in message and 'A2B_0000002.png' in message and 'no space left' in message
    img = tmp_path / 'results' / 'tiny' / 'img'
    assert os.listdir(img) == []                                            # no 0-byte or partial PNG
    assert ckpt.read_checkpoint(str(tmp_path / 'results' / 'tiny' / 'model' / 'tiny_params_latest.pdparams'))['step'] == 2


def test_a_domain_becoming_unreadable_under_workers_saves_then_stops(tmp_path, tiny_data, monkeypatch):
    import shutil
    root = tmp_path / 'data'
    shutil.copytree(tiny_data / 'tiny', root / 'tiny')
    original = UGATIT.train_step

    def train_step(self, real_A, real_B):
        if self.start_step + 1 == 2:                            # during step 2, trainB disappears
            for f in os.listdir(root / 'tiny' / 'trainB'):
                os.remove(root / 'tiny' / 'trainB' / f)
        return original(self, real_A, real_B)
    monkeypatch.setattr(UGATIT, 'train_step', train_step)
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, root, '--iteration', '30', '--num_workers', '1', '--latest_freq', '100')
    message = one_line_error(e)
    assert 'loading the training images failed at step' in message and '--resume True' in message
    step = int(message.split('failed at step ')[1].split(' ')[0])
    saved = ckpt.read_checkpoint(str(tmp_path / 'results' / 'tiny' / 'model' / 'tiny_params_latest.pdparams'))
    assert saved['step'] == step - 1 >= 2 and f'step {step - 1} is saved' in message
    assert child_processes() == [], 'the loaders\' worker processes outlive the failed run'


def child_processes() -> list[str]:
    """PIDs of this process's live children (Linux)."""
    return [pid for task in os.listdir('/proc/self/task')
            for pid in open(f'/proc/self/task/{task}/children').read().split()]


def test_keep_ckpt_prunes_old_periodic_checkpoints(tmp_path, tiny_data):
    model = cli(tmp_path, tiny_data, '--iteration', '4', '--save_freq', '1', '--keep_ckpt', '2') / 'model'
    assert sorted(n for n in os.listdir(model) if n.endswith('.pdparams')) == \
        ['tiny_params_0000003.pdparams', 'tiny_params_0000004.pdparams', 'tiny_params_latest.pdparams']
    assert json.loads((model / 'tiny_params_0000004.pdparams.json').read_text())['step'] == 4
