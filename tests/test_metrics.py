"""extras/metrics.py: the KID and FID estimators against independent references, preprocessing,
features of a folder, and the two-folder command line (never imports torch)."""
import math
from pathlib import Path

import cv2
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest

from dataset import find_images, load_image
from extras import metrics


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


class PooledColours(nn.Layer):
    """Cheap stand-in feature extractor: [N, 3, 299, 299] → [N, 48] 4×4 average colours."""
    weights_file, weights_sha1 = 'pooled-colours', '0' * 40

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
        model(paddle.to_tensor(metrics.preprocess(load_image(path))[None])).numpy()
        for path in find_images(str(tmp_path))])
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
    assert lines[0].startswith('KID×100 = ') and ' ± ' in lines[0] and '(12 real, 12 generated)' in lines[0]
    assert lines[1].startswith('FID     = ')
    assert lines[2].startswith('protocol: KID block (max_block_size 10)') and 'PIL bilinear' in lines[2]


@pytest.mark.parametrize('real, fake, message', [
    (1, 12, 'n_real=1'),                                              # one real image
    (12, 3, 'each block needs 2 of each'),                          # counts too uneven for the blocks
    (None, 12, 'does not exist'),                                   # a missing folder
])
def test_cli_bad_folders_are_one_line_errors(tmp_path, monkeypatch, real, fake, message):
    if real:
        write_images(tmp_path / 'real', real, seed=1)
    write_images(tmp_path / 'fake', fake, seed=2)
    (tmp_path / 'fake' / 'broken.png').write_bytes(b'not a png')            # skipped, as everywhere
    monkeypatch.setattr(metrics, 'load_inception', lambda weights=None: PooledColours())
    with pytest.raises(SystemExit) as e:
        metrics.main(['--real', str(tmp_path / 'real'), '--fake', str(tmp_path / 'fake')])
    assert str(e.value.code).startswith('error: ') and message in str(e.value.code) and '\n' not in str(e.value.code)
