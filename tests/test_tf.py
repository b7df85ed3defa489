"""The authors' TensorFlow model in Paddle, without TensorFlow: conversion, the TF architecture (--arch tf)
against the TF code's own translations, discriminator outputs and training step, recorded from their
unmodified code by tests/fixtures/make_tf_fixtures.py (light and full, ch 2, 96 px).

Checks (measured values are in docs/tf_model.md):
* forward, every generator and discriminator output: max |ours − TF| / max |TF| < 1e-4;
* one training step from model-2 on the recorded batch, compared with model-3: every loss term within
  1e-5 relative; each network's update within 1e-4 (discriminators) and 1e-2 (generators) relative L2
  and spectral-norm u within 1e-5, except the generators' biases right before an instance norm, which
  are not compared: their gradient is zero by construction (rounding noise, which Adam turns into ±lr
  moves in TF too), so any two runs differ there by up to Adam's largest move, and no output depends
  on them.
"""
import functools
import os
import re
from pathlib import Path

import numpy as np
import paddle
import pytest

import convert
import main
from conftest import FIXTURES, copy_checkpoint, data_file, one_line_error, rel_error as rel, rewrite_entries, tf_prefix, write_table
from dataset import load_image
from extras import tf_checkpoint, tf_networks
from extras.convert import TF_SCOPES, convert_tf_checkpoint
from networks import NETWORKS
from UGATIT import UGATIT, build_network

TF = os.path.join(FIXTURES, 'tf')
CONFIGS = ('light', 'full')
FORWARD_TOL, LOSS_TOL, SN_TOL = 1e-4, 1e-5, 1e-5
UPDATE_TOL = {'gen': 1e-2, 'dis': 1e-4}
IN_FRONT_BIAS = re.compile(r'(resblock_\d\.res\d\.conv_0|conv|conv_0|conv_1)\.bias')   # in a generator: an instance norm follows


@functools.lru_cache(maxsize=None)
def recorded(config: str) -> dict:
    with np.load(os.path.join(TF, config, 'outputs.npz')) as data:
        return {k: data[k] for k in data.files}


def to_input(u8: np.ndarray) -> paddle.Tensor:
    """NHWC uint8 → NCHW float32 as their load_test_data: u8 / 127.5 − 1 (in float64, then float32)."""
    return paddle.to_tensor((u8.astype(np.float64) / 127.5 - 1).astype(np.float32).transpose(0, 3, 1, 2))


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
    """(path, arch) of model-2 and model-3 of each configuration, converted once."""
    folder = tmp_path_factory.mktemp('converted')
    return {(config, step): convert_tf_checkpoint(tf_prefix(config, step), str(folder / f'{config}{step}.pdparams'),
                                                  img_size=96)[:2]
            for config in CONFIGS for step in (2, 3)}


def networks(converted, config: str, step: int = 2) -> dict:
    path, arch = converted[config, step]
    state, nets = paddle.load(path), {}
    for name in NETWORKS:
        nets[name] = build_network(name, arch)
        nets[name].set_state_dict(state[name])
        nets[name].eval()
    return nets


def forward_errors(converted, config: str) -> dict:
    """{'<network>/<output>': error} of both generators and the four discriminators on the test images."""
    fx, nets, errors = recorded(config), networks(converted, config), {}
    with paddle.no_grad():
        for gen, images, tf_side in (('genA2B', 'test_A_u8', 'B'), ('genB2A', 'test_B_u8', 'A')):
            out, cam_logit, heatmap = nets[gen](to_input(fx[images]))
            errors[f'{gen}/out'] = rel(out.numpy().transpose(0, 2, 3, 1), fx[f'test/fake_{tf_side}'])
            errors[f'{gen}/cam_logit'] = rel(cam_logit.numpy(), fx[f'test/cam_logit_{tf_side}'])
            errors[f'{gen}/heatmap'] = rel(heatmap.numpy()[:, 0], fx[f'test/heatmap_{tf_side}'])
        for domain in 'AB':
            for scale, tf_scale in (('G', 'global'), ('L', 'local')):
                logit, cam_logit, heatmap = nets[f'dis{scale}{domain}'](to_input(fx[f'test_{domain}_u8']))
                errors[f'dis{scale}{domain}/logit'] = rel(logit.numpy().transpose(0, 2, 3, 1), fx[f'disc/{domain}/logit_{tf_scale}'])
                errors[f'dis{scale}{domain}/cam_logit'] = rel(cam_logit.numpy(), fx[f'disc/{domain}/cam_{tf_scale}'])
                errors[f'dis{scale}{domain}/heatmap'] = rel(heatmap.numpy()[:, 0], fx[f'disc/{domain}/heatmap_{tf_scale}'])
    return errors


def failing(errors: dict) -> dict:
    return {k: v for k, v in errors.items() if not v < FORWARD_TOL}


# --------------------------------------------------------------------------- #
# Forward
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize('config', CONFIGS)
def test_networks_reproduce_the_tf_outputs(converted, config):
    errors = forward_errors(converted, config)
    assert len(errors) == 2 * 3 + 4 * 3 and not failing(errors), failing(errors)


def inject(monkeypatch, bug: str) -> None:
    """Make our TF architecture differ from the TF code in one respect."""
    if bug == 'unbiased variances':
        original = tf_networks.instance_layer_norm
        monkeypatch.setattr(tf_networks, 'instance_layer_norm',
                            lambda x, rho, gamma, beta, eps=1e-5, unbiased=True: original(x, rho, gamma, beta, eps))
    elif bug == 'no smoothing':
        original = tf_networks.TFAdaILN.__init__
        monkeypatch.setattr(tf_networks.TFAdaILN, '__init__', lambda self, channels, smoothing: original(self, channels, False))
    elif bug == 'no conv bias':
        conv = tf_networks.F.conv2d
        monkeypatch.setattr(tf_networks.F, 'conv2d', lambda x, weight, bias, stride: conv(x, weight, None, stride=stride))
    elif bug == 'no MLP bias':
        monkeypatch.setattr(tf_networks.TFDense, 'forward', lambda self, x: paddle.matmul(x, self.kernel))
    elif bug == 'no instance-norm affine':
        monkeypatch.setattr(tf_networks.TFInstanceNorm, 'forward', lambda self, x: paddle.nn.functional.instance_norm(x))
    elif bug == 'directions swapped':
        monkeypatch.setattr('extras.convert.TF_SCOPES', {**TF_SCOPES, 'genA2B': 'generator_A', 'genB2A': 'generator_B'})


def norm_errors() -> dict:
    """TF AdaLIN (with and without smoothing) and LIN on a 3×4 map, where n − 1 and n differ by 9%,
    against the float64 formula with biased variances and ρ_eff = clip(ρ − 0.1, 0, 1) under smoothing."""
    rng = np.random.RandomState(0)
    x = rng.randn(2, 5, 3, 4).astype(np.float32) * 2 + 1
    rho, gamma, beta = rng.rand(5).astype(np.float32), rng.randn(2, 5).astype(np.float32), rng.randn(2, 5).astype(np.float32)

    def reference(rho_eff, g, b):
        x64 = x.astype(np.float64)
        a_in = (x64 - x64.mean((2, 3), keepdims=True)) / np.sqrt(x64.var((2, 3), keepdims=True) + 1e-5)
        a_ln = (x64 - x64.mean((1, 2, 3), keepdims=True)) / np.sqrt(x64.var((1, 2, 3), keepdims=True) + 1e-5)
        r = rho_eff.reshape(1, -1, 1, 1)
        return g * (r * a_in + (1 - r) * a_ln) + b
    errors = {}
    for smoothing in (True, False):
        layer = tf_networks.TFAdaILN(5, smoothing)
        layer.rho.set_value(rho)
        out = layer(paddle.to_tensor(x), paddle.to_tensor(gamma), paddle.to_tensor(beta)).numpy()
        rho_eff = np.clip(rho - 0.1, 0, 1) if smoothing else rho
        errors[f'AdaLIN smoothing={smoothing}'] = rel(out, reference(rho_eff, gamma[:, :, None, None], beta[:, :, None, None]))
    lin = tf_networks.TFLIN(5)
    lin.rho.set_value(rho)
    lin.gamma.set_value(gamma[0])
    lin.beta.set_value(beta[0])
    errors['LIN'] = rel(lin(paddle.to_tensor(x)).numpy(), reference(rho, gamma[0][:, None, None], beta[0][:, None, None]))
    return errors


def test_tf_norms_are_the_formula_with_biased_variances():
    assert all(v < 1e-5 for v in norm_errors().values()), norm_errors()


@pytest.mark.parametrize('bug', ['unbiased variances', 'no smoothing', 'no conv bias', 'no MLP bias',
                                 'no instance-norm affine', 'directions swapped'])
def test_each_tf_difference_is_detected(tmp_path, monkeypatch, bug):
    """Drop any one thing the TF code does differently, and a check fails: the norms' formula, or the
    generators' outputs."""
    inject(monkeypatch, bug)
    if bug in ('unbiased variances', 'no smoothing'):
        assert any(v >= 1e-5 for v in norm_errors().values())
        if bug == 'unbiased variances':
            return                                  # at 96 px the bottleneck's 576 positions hide it (2e-5)
    converted = {('light', 2): convert_tf_checkpoint(tf_prefix('light', 2), str(tmp_path / 'c.pdparams'), img_size=96)[:2]}
    bad = failing(forward_errors(converted, 'light'))
    assert any(k.startswith('gen') for k in bad), bad


def test_nhwc_flattening_of_the_full_mlp_is_detected(converted, monkeypatch):
    """The full model's first MLP layer sees the bottleneck flattened in TF's NHWC order."""
    monkeypatch.setattr(paddle.Tensor, 'transpose', lambda self, perm: self if perm == [0, 2, 3, 1] else
                        paddle.transpose(self, perm))
    bad = failing(forward_errors(converted, 'full'))
    assert {'genA2B/out', 'genB2A/out'} <= set(bad), bad


# --------------------------------------------------------------------------- #
# One training step, from the TF checkpoint's weights and Adam state
# --------------------------------------------------------------------------- #
def tf_gan(converted, config: str, tmp_path) -> UGATIT:
    path, arch = converted[config, 2]
    args = main.parse_args(['--arch', 'tf', '--light', str(arch['light']), '--ch', str(arch['ch']), '--img_size', '96',
                            '--decay_flag', 'False', '--lr', '0.0001', '--device', 'cpu', '--num_workers', '0',
                            '--result_dir', str(tmp_path)])
    gan = UGATIT(args)
    gan.build_model()
    assert gan.load(path) == 2
    return gan


def tf_losses(losses: dict) -> dict:
    """Our loss terms summed as the TF code's summaries (Generator_A_cycle = 10·L1(x_bab, real_B): TF
    pairs the cycle of B with generator A)."""
    def gan_loss(d):
        return sum(losses[f'G_ad{c}_loss_{s}{d}'] for c in ('', '_cam') for s in 'GL')
    return {'D_A_loss': losses['D_loss_A'], 'D_B_loss': losses['D_loss_B'],
            'G_A_gan': gan_loss('A'), 'G_B_gan': gan_loss('B'),
            'G_A_cycle': 10 * losses['G_recon_loss_B'], 'G_B_cycle': 10 * losses['G_recon_loss_A'],
            'G_A_identity': 10 * losses['G_identity_loss_A'], 'G_B_identity': 10 * losses['G_identity_loss_B'],
            'G_A_cam': 1000 * losses['G_cam_loss_A'], 'G_B_cam': 1000 * losses['G_cam_loss_B']}


def step_errors(converted, config: str, tmp_path) -> dict:
    fx, gan = recorded(config), tf_gan(converted, config, tmp_path)
    before = {name: {k: v.numpy().copy() for k, v in net.state_dict().items()} for name, net in gan.networks().items()}
    losses = tf_losses(gan.train_step(to_input(fx['train_A_u8'][2]), to_input(fx['train_B_u8'][2])))
    errors = {f'loss/{k}': abs(v - float(fx[f'loss/{k}'])) / abs(float(fx[f'loss/{k}'])) for k, v in losses.items()}
    after = paddle.load(converted[config, 3][0])
    for name, net in gan.networks().items():
        ours = {k: v.numpy() for k, v in net.state_dict().items()}
        exact = [k for k in ours if not k.endswith('.u') and not (name.startswith('gen') and IN_FRONT_BIAS.fullmatch(k))]
        delta = {k: (ours[k] - before[name][k], after[name][k].numpy() - before[name][k]) for k in exact}
        errors[f'update/{name}'] = (np.sqrt(sum(((d[0] - d[1]) ** 2).sum() for d in delta.values()))
                                    / np.sqrt(sum((d[1] ** 2).sum() for d in delta.values())))
        u = [k for k in ours if k.endswith('.u')]
        if u:
            errors[f'u/{name}'] = max(float(np.abs(ours[k] - after[name][k].numpy()).max()) for k in u)
    return errors


def step_failures(errors: dict) -> dict:
    def tolerance(key):
        kind, _, name = key.partition('/')
        return {'loss': LOSS_TOL, 'u': SN_TOL}.get(kind) or UPDATE_TOL[name[:3]]
    return {k: v for k, v in errors.items() if not v < tolerance(k)}


@pytest.mark.parametrize('config', CONFIGS)
def test_one_training_step_is_the_tf_step(converted, config, tmp_path):
    """From model-2 (weights, u, both Adam states) on the recorded batch, our step gives TF's step-3 losses
    and model-3: the D and G updates, ρ clipped, u advanced once per update."""
    errors = step_errors(converted, config, tmp_path)
    assert len(errors) == 10 + 6 + 4                      # losses, updates, spectral-norm u
    assert not step_failures(errors), step_failures(errors)


@pytest.mark.parametrize('bug', ['pytorch spectral norm', 'pytorch adam epsilon', 'weight decay everywhere'])
def test_the_step_check_detects_training_differences(converted, tmp_path, monkeypatch, bug):
    if bug == 'pytorch spectral norm':                # one power iteration per call instead of per update
        original = tf_networks.TFSpectralNorm.forward

        def per_call(self, matrix):
            sigma = original(self, matrix)
            self.advance()
            return sigma
        monkeypatch.setattr(tf_networks.TFSpectralNorm, 'forward', per_call)
    elif bug == 'pytorch adam epsilon':
        monkeypatch.setattr('UGATIT.TFAdam', paddle.optimizer.Adam)
    else:
        monkeypatch.setattr('UGATIT.decay_kernels', lambda networks, c: [
            setattr(p, 'regularizer', paddle.regularizer.L2Decay(c)) for net in networks for p in net.parameters()])
    assert step_failures(step_errors(converted, 'light', tmp_path))


# --------------------------------------------------------------------------- #
# The command line: convert, translate, fine-tune
# --------------------------------------------------------------------------- #
def convert_cli(capsys, *argv) -> list[str]:
    convert.main(list(argv))
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith('main.py flags: ')
    return lines[-1][len('main.py flags: '):].split()


@pytest.mark.parametrize('config', CONFIGS)
def test_converted_release_folder_translates_as_the_tf_code(tmp_path, capsys, config):
    """convert.py on the checkpoint folder, then --phase infer with the flags it prints: the PNGs the TF
    code's test() wrote, up to 8-bit rounding (TF truncates, we round)."""
    results = tmp_path / 'results'
    release = copy_checkpoint(tf_prefix(config, 2), tmp_path)              # a release: checkpoint/<model_dir>/
    for path in os.listdir(os.path.dirname(release)):                       # holding the one model the
        if '.model-3.' in path:                                             # test outputs were made with
            os.remove(os.path.join(os.path.dirname(release), path))
    with open(os.path.join(os.path.dirname(release), 'checkpoint'), 'w') as f:
        f.write(f'model_checkpoint_path: "{os.path.basename(release)}"\n')
    extra = ['--img_size', '96'] if config == 'light' else []
    flags = convert_cli(capsys, '--src', str(tmp_path / 'checkpoint'), '--dst', str(results / 'tiny' / 'model'),
                        '--dataset', 'tiny', *extra)
    assert flags[:4] == ['--dataset', 'tiny', '--arch', 'tf'] and ('--light' in flags) == (config == 'light')
    fx = recorded(config)
    for direction, images, tf_side in (('A2B', 'testA', 'B'), ('B2A', 'testB', 'A')):
        out = tmp_path / direction
        main.main(flags + ['--result_dir', str(results), '--device', 'cpu', '--phase', 'infer', '--direction', direction,
                           '--input', os.path.join(TF, config, images), '--output', str(out)])
        for i, name in enumerate(sorted(os.listdir(os.path.join(TF, config, images)))):
            ours = load_image(str(out / name)).astype(int)
            assert np.abs(ours - fx[f'test/png_fake_{tf_side}'][i].astype(int)).max() <= 1, (direction, name)


def test_fine_tuning_continues_the_tf_run(tmp_path, tiny_data, capsys, caplog):
    """--resume True from a converted training checkpoint: its step, weights and Adam state (β^t) carry on."""
    model = tmp_path / 'results' / 'tiny' / 'model'
    flags = convert_cli(capsys, '--src', tf_prefix('light', 2), '--dst', str(model), '--dataset', 'tiny', '--img_size', '96')
    main.main(flags + ['--data_root', str(tiny_data), '--result_dir', str(tmp_path / 'results'), '--device', 'cpu',
                       '--num_workers', '0', '--resume', 'True', '--iteration', '3', '--print_freq', '100'])
    assert 'resumed from' in caplog.text and 'Adam starts fresh' not in caplog.text
    state = paddle.load(str(model / 'tiny_params_latest.pdparams'))
    assert state['step'] == 3 and state['arch']['arch'] == 'tf'
    powers = {k: float(v.numpy()[0]) for k, v in state['G_optim'].items() if k.endswith('beta1_pow_acc_0')}
    assert set(powers.values()) == {0.125 * 0.5}                 # TF's beta1_power of model-2, one step on


def test_a_generators_only_checkpoint_tests_but_does_not_train(tmp_path, tiny_data, capsys):
    model = tmp_path / 'results' / 'tiny' / 'model'
    flags = convert_cli(capsys, '--src', tf_prefix('light_test_phase', 2), '--dst', str(model), '--dataset', 'tiny',
                        '--img_size', '96')
    common = flags + ['--data_root', str(tiny_data), '--result_dir', str(tmp_path / 'results'), '--device', 'cpu',
                      '--num_workers', '0']
    main.main(common + ['--phase', 'test'])
    assert len(os.listdir(tmp_path / 'results' / 'tiny' / 'test' / 'A2B')) == 3
    with pytest.raises(SystemExit) as e:
        main.main(common + ['--resume', 'True', '--iteration', '3'])
    assert 'generators only' in one_line_error(e)


@pytest.mark.parametrize('damage, message', [
    ('truncate', 'is truncated'),                  # the reader's errors (test_tf_checkpoint.py) as one line
    ('not U-GAT-IT', 'not a checkpoint of the authors'),
    ('extra variable', 'does not have'),
])
def test_bad_tf_checkpoints_are_one_line_errors(tmp_path, capsys, damage, message):
    prefix = copy_checkpoint(tf_prefix('light', 2), tmp_path)
    if damage == 'truncate':
        path = data_file(prefix)
        with open(path, 'r+b') as f:
            f.truncate(os.path.getsize(path) // 2)
    elif damage == 'not U-GAT-IT':
        rewrite_entries(prefix, lambda name, value: value, keep=lambda name: not name.startswith('generator_B'))
    else:
        items = tf_checkpoint._read_table(open(prefix + '.index', 'rb').read())
        write_table(prefix + '.index', sorted(items + [(b'zz_extra/kernel', items[1][1])]))
    with pytest.raises(SystemExit) as e:
        convert.main(['--src', prefix, '--dst', str(tmp_path / 'out'), '--dataset', 'x'])
    assert message in one_line_error(e)


@pytest.mark.parametrize('where, message', [
    ('mistyped prefix', 'does not exist, and neither does'),
    ('release zip', 'is an archive: unpack it first'),
    ('no step in the name', 'pass --step'),
])
def test_wrong_sources_are_one_line_errors(tmp_path, where, message):
    prefix = copy_checkpoint(tf_prefix('light', 2), tmp_path)
    src = {'mistyped prefix': prefix[:-1] + '9', 'release zip': str(tmp_path / 'checkpoint.zip')}.get(where)
    if where == 'no step in the name':
        for path in Path(prefix).parent.glob(Path(prefix).name + '.*'):
            path.rename(path.parent / ('model' + path.name[len(Path(prefix).name):]))
        src = str(Path(prefix).parent / 'model')
    with pytest.raises(SystemExit) as e:
        convert.main(['--src', src, '--dst', str(tmp_path / 'out'), '--dataset', 'x'])
    assert message in one_line_error(e)


def test_the_dataset_comes_from_the_tf_folder_name(tmp_path):
    """The authors' model_dir names the dataset (``UGATIT_light_tiny_lsgan_…``): --dataset may be left out."""
    prefix = copy_checkpoint(tf_prefix('light', 2), tmp_path)
    convert.main(['--src', prefix, '--dst', str(tmp_path / 'out'), '--generators_only', 'True'])
    assert 'tiny_params_0000002.pdparams' in os.listdir(tmp_path / 'out')


def test_a_full_model_refuses_another_img_size(tmp_path):
    """The full model's MLP fixes the image size: a different --img_size is one line, as for .pt files."""
    with pytest.raises(SystemExit) as e:
        convert.main(['--src', tf_prefix('full', 2), '--dst', str(tmp_path), '--dataset', 'x', '--img_size', '128'])
    assert 'this full model was trained at 96 px' in one_line_error(e)
