"""The trainer: one training step, the learning-rate schedule, save and load, mixed precision."""
import numpy as np
import paddle
import pytest

from conftest import batch, build, snapshot
from extras.checkpoints import ArchitectureMismatch, checkpoint_name, list_checkpoints
from networks import ILN, NETWORKS, adaILN

LOSS_TERMS = {f'D_ad{k}_loss_{s}{d}' for k in ('', '_cam') for s in 'GL' for d in 'AB'} \
    | {f'G_ad{k}_loss_{s}{d}' for k in ('', '_cam') for s in 'GL' for d in 'AB'} \
    | {f'G_{t}_loss_{d}' for t in ('recon', 'identity', 'cam') for d in 'AB'} \
    | {'D_loss_A', 'D_loss_B', 'D_loss', 'G_loss_A', 'G_loss_B', 'G_loss'}


def test_build_model_needs_no_data(tmp_path):
    gan = build(tmp_path, '--dataset', 'does_not_exist')
    assert set(gan.networks()) == {'genA2B', 'genB2A', 'disGA', 'disGB', 'disLA', 'disLB'}
    assert not (tmp_path / 'data').exists()


def test_train_step_losses_finite_params_move_rho_clipped(tmp_path):
    gan = build(tmp_path)
    norms = [l for g in (gan.genA2B, gan.genB2A) for l in g.sublayers() if isinstance(l, (adaILN, ILN))]
    for layer in norms[::2]:                       # push ρ outside [0, 1]: the step must clip it
        layer.rho.set_value(np.full(layer.rho.shape, 1.5, np.float32))
    for layer in norms[1::2]:
        layer.rho.set_value(np.full(layer.rho.shape, -0.5, np.float32))
    before = snapshot(gan)
    losses = gan.train_step(batch(0), batch(1))
    assert set(losses) == LOSS_TERMS
    assert all(isinstance(v, float) and np.isfinite(v) for v in losses.values())
    assert losses['D_loss'] == pytest.approx(losses['D_loss_A'] + losses['D_loss_B'], rel=1e-5)
    assert losses['G_loss'] == pytest.approx(losses['G_loss_A'] + losses['G_loss_B'], rel=1e-5)
    # The CAM term of an untrained generator sits near 2·ln 2 per domain.
    assert 0.5 < losses['G_cam_loss_A'] < 3
    after = snapshot(gan)
    for name in NETWORKS:
        assert any(not np.array_equal(before[k], after[k]) for k in before if k.startswith(name + '.')), name
    for layer in norms:
        rho = layer.rho.numpy()
        assert rho.min() >= 0 and rho.max() <= 1
    assert any(np.all(l.rho.numpy() == 1.0) for l in norms[::2])
    assert any(np.all(l.rho.numpy() == 0.0) for l in norms[1::2])


def test_train_step_weights_losses(tmp_path):
    """G_loss_A = λ_adv·Σ adv + λ_cycle·recon + λ_identity·identity + λ_cam·cam, for the given λs."""
    gan = build(tmp_path, '--adv_weight', '2', '--cycle_weight', '3', '--identity_weight', '5', '--cam_weight', '7')
    l = gan.train_step(batch(0), batch(1))
    adv = sum(l[f'G_ad{k}_loss_{s}A'] for k in ('', '_cam') for s in 'GL')
    expected = 2 * adv + 3 * l['G_recon_loss_A'] + 5 * l['G_identity_loss_A'] + 7 * l['G_cam_loss_A']
    assert l['G_loss_A'] == pytest.approx(expected, rel=1e-5)
    d_adv = sum(l[f'D_ad{k}_loss_{s}A'] for k in ('', '_cam') for s in 'GL')
    assert l['D_loss_A'] == pytest.approx(2 * d_adv, rel=1e-5)


def test_train_step_is_deterministic(tmp_path):
    a, b = build(tmp_path), build(tmp_path)
    la = [a.train_step(batch(i), batch(i + 10)) for i in range(2)]
    lb = [b.train_step(batch(i), batch(i + 10)) for i in range(2)]
    assert la == lb


@pytest.mark.parametrize('iteration', [10, 11])
def test_lr_schedule_matches_official_decrements(tmp_path, iteration):
    gan = build(tmp_path, '--iteration', str(iteration), '--lr', '0.001')
    lr, official = 0.001, []
    for step in range(1, iteration + 1):            # the official in-place decrement
        if step > iteration // 2:
            lr -= 0.001 / (iteration // 2)
        official.append(lr)
    ours = [gan.lr_at(s) for s in range(1, iteration + 1)]
    np.testing.assert_allclose(ours[:10], official[:10], atol=1e-15)
    assert ours[-1] == 0 <= min(ours)         # an odd T: the official last step has −lr₀/(T//2), ours 0
    no_decay = build(tmp_path, '--iteration', '10', '--decay_flag', 'False')
    assert {no_decay.lr_at(s) for s in range(1, 11)} == {1e-4}


def test_save_load_round_trip(tmp_path):
    gan = build(tmp_path)
    gan.train_step(batch(0), batch(1))
    path = str(tmp_path / 'ckpt.pdparams')
    gan.save(path, step=1)
    other = build(tmp_path, '--seed', '7')
    assert other.load(path) == 1
    for name, net in gan.networks().items():
        mine, theirs = net.state_dict(), getattr(other, name).state_dict()
        assert mine.keys() == theirs.keys()
        for k in mine:
            np.testing.assert_array_equal(mine[k].numpy(), theirs[k].numpy(), err_msg=f'{name}.{k}')
    # With the optimizer state restored, the next step is identical.
    assert gan.train_step(batch(2), batch(3)) == other.train_step(batch(2), batch(3))


def test_load_rejects_other_architecture(tmp_path):
    gan = build(tmp_path)
    path = str(tmp_path / 'ckpt.pdparams')
    gan.save(path, step=3)
    other = build(tmp_path, '--ch', '8')
    with pytest.raises(ArchitectureMismatch, match='--ch 4 .checkpoint. vs 8'):
        other.load(path)


def test_checkpoint_names(tmp_path):
    assert checkpoint_name('selfie2anime', 100000) == 'selfie2anime_params_0100000.pdparams'
    assert checkpoint_name('selfie2anime', None) == 'selfie2anime_params_latest.pdparams'
    for step in (20, 3, 100):
        (tmp_path / checkpoint_name('x', step)).write_bytes(b'')
    (tmp_path / checkpoint_name('xy', 500)).write_bytes(b'')
    assert [p.rsplit('_', 1)[1] for p in list_checkpoints(str(tmp_path), 'x')] == \
        ['0000003.pdparams', '0000020.pdparams', '0000100.pdparams']


# --------------------------------------------------------------------------- #
# Mixed precision
# --------------------------------------------------------------------------- #
def loss_curve(tmp_path, *extra, steps=12):
    gan = build(tmp_path, *extra)
    return np.array([[l['D_loss'], l['G_loss']] for l in (gan.train_step(batch(i), batch(100 + i)) for i in range(steps))]), gan


@pytest.mark.parametrize('amp', ['bf16', 'fp16'])
def test_amp_tracks_the_float32_loss_curve(tmp_path, amp):
    """12 steps in mixed precision stay within 5% of the float32 D and G losses, step by step.

    On the CPU Paddle (3.3.1) applies auto_cast only on GPU/XPU devices, has no bf16/fp16
    convolution kernel and disables the GradScaler, so there the AMP code path (autocast
    contexts, float32 statistics and losses, the scaler calls) must give the float32 curve
    exactly; on a GPU the same test measures the real low-precision drift.
    """
    fp32, _ = loss_curve(tmp_path)
    mixed, gan = loss_curve(tmp_path, '--amp', amp)
    assert np.isfinite(mixed).all()
    if paddle.get_device() == 'cpu':
        np.testing.assert_array_equal(mixed, fp32)
    else:
        np.testing.assert_allclose(mixed, fp32, rtol=0.05)
        assert gan.G_scaler.is_enable() == (amp == 'fp16')


class StatefulScaler:
    """A loss scaler with state on any device (Paddle disables its GradScaler on the CPU, where
    its state_dict is empty): scale 1, and a counter of updates as the state to carry."""

    def __init__(self, init_loss_scaling: float, enable: bool = True, **_):
        self.init_loss_scaling, self.updates, self.enable = init_loss_scaling, 0, enable

    def is_enable(self) -> bool:
        return self.enable

    def scale(self, loss):
        return loss

    def step(self, optim):
        optim.step()

    def update(self):
        self.updates += 1

    def state_dict(self) -> dict:
        return {'init_loss_scaling': self.init_loss_scaling, 'updates': self.updates}

    def load_state_dict(self, state: dict):
        self.init_loss_scaling, self.updates = state['init_loss_scaling'], state['updates']


def test_fp16_checkpoint_keeps_the_loss_scale(tmp_path, monkeypatch):
    monkeypatch.setattr(paddle.amp, 'GradScaler', StatefulScaler)
    gan = build(tmp_path, '--amp', 'fp16')
    gan.train_step(batch(0), batch(1))
    gan.train_step(batch(2), batch(3))
    path = str(tmp_path / 'amp.pdparams')
    gan.save(path, step=2)
    other = build(tmp_path, '--amp', 'fp16')
    assert other.G_scaler.state_dict()['updates'] == 0
    assert other.load(path) == 2
    assert other.G_scaler.state_dict() == gan.G_scaler.state_dict() == {'init_loss_scaling': 2.0 ** 15, 'updates': 2}
    assert other.D_scaler.state_dict() == gan.D_scaler.state_dict()
