"""Never lose a run: exact resume, clean stop on signals, crash-safe saves, fallbacks, NaN and disk guards."""
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

import checkpoint as ckpt
import main
import UGATIT as ugatit_module
from conftest import TINY, tiny_args, tiny_argv
from UGATIT import UGATIT

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(tmp_path, data_root, *extra):
    main.main(tiny_argv(tmp_path / 'results', data_root, *extra))
    return tmp_path / 'results' / 'tiny' / 'model'


def flat_state(path):
    """Every tensor of a checkpoint (networks and optimizers) as numpy, keyed by a path."""
    state = paddle.load(str(path))
    out = {}
    for part in ('genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB', 'G_optim', 'D_optim'):
        for k, v in state[part].items():
            if hasattr(v, 'shape'):
                out[f'{part}/{k}'] = np.asarray(v.numpy() if hasattr(v, 'numpy') else v)
    return out, state


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
    stopped, _ = flat_state(two / 'tiny_params_latest.pdparams')
    assert paddle.load(str(two / 'tiny_params_latest.pdparams'))['step'] == 2
    cli(tmp_path / 'two', tiny_data, *common, '--resume', 'True')

    a, state_a = flat_state(one / 'tiny_params_latest.pdparams')
    b, state_b = flat_state(two / 'tiny_params_latest.pdparams')
    assert state_a['step'] == state_b['step'] == 4
    assert a.keys() == b.keys() and len(a) > 100
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # the check can fail: the state after 2 steps differs from the state after 4
    assert any(not np.array_equal(a[k], stopped[k]) for k in a if k.startswith('genA2B'))


def test_resume_continues_at_the_next_step(tmp_path, tiny_data, caplog):
    cli(tmp_path, tiny_data, '--iteration', '2', '--print_freq', '1')
    cli(tmp_path, tiny_data, '--iteration', '3', '--print_freq', '1', '--resume', 'True')
    assert 'resumed from' in caplog.text and 'at step 2' in caplog.text
    assert '[      3/      3]' in caplog.text and '[      2/      3]' not in caplog.text


# --------------------------------------------------------------------------- #
# Signals: real processes
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
    """The process's output until ``needle`` appears, it exits, or ``limit`` seconds pass
    (reads without blocking past the deadline, so a silent hang cannot hang the test)."""
    text, deadline, fd = '', time.time() + limit, proc.stdout.fileno()
    while needle not in text:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.time()))
        chunk = os.read(fd, 65536) if ready else b''
        if not chunk:
            break
        text += chunk.decode(errors='replace')
    return text


@pytest.mark.parametrize('signum', [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_and_exits_zero(tmp_path, training, signum):
    proc = training('--num_workers', '1')
    assert '[      2/' in wait_for_output(proc, '[      2/'), 'training did not start'
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    name = signal.Signals(signum).name
    assert f'stopped by {name} at step' in out
    step = int(out.split(f'stopped by {name} at step ')[1].split(':')[0])
    latest = tmp_path / 'results' / 'tiny' / 'model' / 'tiny_params_latest.pdparams'
    assert paddle.load(str(latest))['step'] == step >= 2
    assert 'Traceback' not in out


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


def test_second_ctrl_c_exits_at_once_without_saving(tmp_path, tiny_data):
    argv = tiny_argv(tmp_path / 'results', tiny_data, '--iteration', '10', '--latest_freq', '100')
    proc = subprocess.run([sys.executable, '-c', SECOND_CTRL_C.format(root=ROOT, argv=argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130, proc.stderr
    assert 'SIGINT received: stopping after this step' in proc.stderr
    assert 'exiting at once without saving' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not (tmp_path / 'results' / 'tiny' / 'model' / 'tiny_params_latest.pdparams').exists()


KILL_DURING_SAVE = r'''
import os, signal, sys
sys.path.insert(0, {root!r})
import utils
from main import parse_args
from UGATIT import UGATIT
gan = UGATIT(parse_args({argv!r}))
gan.build_model()
gan.save({path!r}, step=1)
real = utils.os.{where}
def die(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
utils.os.{where} = die
gan.genA2B.gamma.weight.set_value(gan.genA2B.gamma.weight * 2)
gan.save({path!r}, step=2)
'''


@pytest.mark.parametrize('where', ['fsync', 'replace'])
def test_sigkill_during_save_leaves_previous_checkpoint(tmp_path, where):
    """SIGKILL after the new bytes are written but before they are synced / renamed into place."""
    path = str(tmp_path / 'x_params_latest.pdparams')
    argv = TINY + ['--dataset', 'x', '--result_dir', str(tmp_path)]
    script = KILL_DURING_SAVE.format(root=ROOT, argv=argv, path=path, where=where)
    proc = subprocess.run([sys.executable, '-c', script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = ckpt.read_checkpoint(path)
    assert state['step'] == 1
    assert [n for n in os.listdir(tmp_path) if n.endswith('.tmp')]      # the interrupted write's leftover
    assert ckpt.candidates(str(tmp_path), 'x') == [(1, path)]             # which nothing mistakes for a checkpoint


# --------------------------------------------------------------------------- #
# Fallbacks and mismatches
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize('damage', ['truncate', 'garbage'])
def test_corrupt_newest_checkpoint_falls_back(tmp_path, tiny_data, damage, caplog):
    model = cli(tmp_path, tiny_data, '--iteration', '3', '--save_freq', '2', '--latest_freq', '100')
    latest = model / 'tiny_params_latest.pdparams'
    data = latest.read_bytes()
    if damage == 'truncate':
        latest.write_bytes(data[:len(data) // 2])
    else:
        latest.write_bytes(b'\0' * len(data))
    gan = UGATIT(tiny_args(tmp_path, '--resume', 'True', data_root=tiny_data))
    gan.build_model()
    gan.resume_latest()
    assert gan.start_step == 2
    assert 'tiny_params_latest.pdparams' in caplog.text and 'falling back' in caplog.text


def test_architecture_mismatch_is_one_line_naming_each_argument(tmp_path, tiny_data):
    cli(tmp_path, tiny_data, '--iteration', '1')
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '2', '--resume', 'True', '--ch', '8', '--light', 'False')
    message = str(e.value.code)
    assert '\n' not in message
    assert '--light True (checkpoint) vs False (now)' in message and '--ch 4 (checkpoint) vs 8 (now)' in message


def test_weights_without_optimizer_state_resume_with_fresh_adam(tmp_path, tiny_data, caplog):
    model = cli(tmp_path, tiny_data, '--iteration', '1')
    path = model / 'tiny_params_latest.pdparams'
    state = paddle.load(str(path))
    weights_only = {k: state[k] for k in ('genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB', 'step', 'arch')}
    ckpt.write_checkpoint(str(path), weights_only)
    cli(tmp_path, tiny_data, '--iteration', '2', '--resume', 'True')
    assert 'holds no optimizer state (converted weights?): Adam starts fresh' in caplog.text
    assert paddle.load(str(path))['step'] == 2


# --------------------------------------------------------------------------- #
# Numerical faults
# --------------------------------------------------------------------------- #
def params_of(gan, *names):
    return {f'{n}.{k}': v.numpy().copy() for n in names for k, v in getattr(gan, n).state_dict().items()}


def test_nonfinite_d_loss_updates_nothing(tmp_path):
    gan = UGATIT(tiny_args(tmp_path))
    gan.build_model()
    before = params_of(gan, 'genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB')
    real = paddle.zeros([1, 3, 96, 96])
    losses = gan.train_step(real * math.nan, real)
    assert math.isnan(losses['D_loss']) and gan.nonfinite_steps == 1
    after = params_of(gan, 'genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB')
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert gan.train_step(real, real)['G_loss'] > 0                        # and the next step runs normally


def test_nonfinite_g_loss_skips_the_g_update(tmp_path, monkeypatch):
    gan = UGATIT(tiny_args(tmp_path))
    gan.build_model()
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
    message = str(e.value.code)
    assert '3 consecutive steps with non-finite losses or gradients (steps 3-5)' in message
    model = tmp_path / 'results' / 'tiny' / 'model'
    assert str(model / 'tiny_params_0000004.pdparams') in message          # the newest, equal to latest
    # The checkpoints written during the streak hold the last good weights, untouched by the skipped steps.
    good = ckpt.read_checkpoint(str(model / 'tiny_params_0000002.pdparams'))
    latest = ckpt.read_checkpoint(str(model / 'tiny_params_latest.pdparams'))
    assert latest['step'] == 4
    for net in ('genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB'):
        for k, v in good[net].items():
            np.testing.assert_array_equal(latest[net][k].numpy(), v.numpy(), err_msg=f'{net}.{k}')


def test_nonfinite_g_gradient_with_finite_losses_counts_as_skipped(tmp_path, tiny_data, monkeypatch):
    """A NaN gradient behind finite losses skips the update, and these skips stop training too."""
    original = UGATIT.build_model

    def poisoned(self):
        original(self)
        self.genA2B.gamma.weight.register_hook(lambda grad: grad * math.nan)
    monkeypatch.setattr(UGATIT, 'build_model', poisoned)
    with pytest.raises(SystemExit) as e:
        cli(tmp_path, tiny_data, '--iteration', '20', '--max_nan_steps', '2')
    assert '2 consecutive steps with non-finite losses or gradients (steps 1-2)' in str(e.value.code)


def test_nonfinite_parameters_are_never_saved(tmp_path, caplog):
    gan = UGATIT(tiny_args(tmp_path))
    gan.build_model()
    path = str(tmp_path / 'ckpt.pdparams')
    gan.genA2B.gamma.weight.set_value(gan.genA2B.gamma.weight * math.nan)
    gan.save(path, step=1)
    assert not os.path.exists(path) and 'not finite' in caplog.text


# --------------------------------------------------------------------------- #
# Disk
# --------------------------------------------------------------------------- #
def test_unwritable_result_dir_is_a_one_line_error_at_start(tmp_path, tiny_data):
    blocker = tmp_path / 'a_file'
    blocker.write_text('not a folder')
    with pytest.raises(SystemExit) as e:
        main.main(tiny_argv(blocker, tiny_data, '--iteration', '1'))
    message = str(e.value.code)
    assert 'cannot write to' in message and '--result_dir' in message and '\n' not in message


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
    assert 'no space left on the device' in str(e.value.code) and 'previous checkpoint is intact' in str(e.value.code)
    model = tmp_path / 'results' / 'tiny' / 'model'
    assert ckpt.read_checkpoint(str(model / 'tiny_params_latest.pdparams'))['step'] == 1
    assert not [n for n in os.listdir(model) if n.endswith('.tmp')]          # the partial file is removed


def test_keep_ckpt_prunes_old_periodic_checkpoints(tmp_path, tiny_data):
    model = cli(tmp_path, tiny_data, '--iteration', '4', '--save_freq', '1', '--keep_ckpt', '2')
    assert sorted(n for n in os.listdir(model) if n.endswith('.pdparams')) == \
        ['tiny_params_0000003.pdparams', 'tiny_params_0000004.pdparams', 'tiny_params_latest.pdparams']
    assert json.loads((model / 'tiny_params_0000004.pdparams.json').read_text())['step'] == 4
