"""Official weights → this port's checkpoints: the PyTorch code's (znxlwm/UGATIT-pytorch, read without
torch) and the authors' TensorFlow release (taki0112/UGATIT, read without TensorFlow).

PyTorch. An official checkpoint is ``torch.save({'genA2B': state_dict, ..., 'disLB': state_dict})``
(``.npz`` of ``<network>/<name>`` arrays accepted too). The sub-layer names of networks.py are the
official ones, so every key maps to itself. Layouts: Paddle stores a Linear weight [in, out], torch
[out, in]: every Linear weight (found by name, since square ones would pass a shape check
untransposed) is transposed. Spectral norm: torch's ``weight_orig``/``weight_u``/``weight_v`` are
Paddle's parameter and buffers of the same names and conventions, so u/v carry over unchanged.
Every key and shape is checked: a missing, extra or mis-shaped entry is an error listing all of them.
The converted checkpoint holds the six networks, the step and the architecture, and no optimizer
state: ``--resume`` continues from it with fresh Adam moments, as the official resume does.
"""
from __future__ import annotations

import math
import os
import pickle
import re
import zipfile
from typing import Mapping

import numpy as np
import paddle
import paddle.nn as nn

from extras import checkpoints as ckpt
from extras.tf_checkpoint import MODEL_DIR, TF_FILE, TFCheckpoint, prefix_step
from extras.tf_networks import TFConv, TFDense
from extras.torch_file import read_torch_file
from networks import GENERATORS, NETWORKS
from UGATIT import build_network

DEFAULT_LIGHT_IMG_SIZE = 256   # the light model's shapes do not depend on the image size
DEFAULT_ARCH = dict(arch='pytorch', norm='adalin', cam_g=True, cam_d=True, self_attn='none', smoothing=False)

# torch.nn.utils.parametrizations.spectral_norm (torch >= 1.13) names the same tensors differently.
_PARAMETRIZATION_NAMES = (('.parametrizations.weight.original', '.weight_orig'),
                          ('.parametrizations.weight.0._u', '.weight_u'),
                          ('.parametrizations.weight.0._v', '.weight_v'))


class ConversionError(ValueError):
    """Official weights that do not fit our networks, with every offending entry listed."""


# --------------------------------------------------------------------------- #
# One network
# --------------------------------------------------------------------------- #
def linear_weight_keys(layer: nn.Layer) -> set[str]:
    """State-dict keys of every Linear weight of ``layer`` (``weight``, or ``weight_orig`` under SN)."""
    keys = set()
    for name, sub in layer.named_sublayers():
        if isinstance(sub, nn.Linear):
            for param in ('weight', 'weight_orig'):
                if param in sub._parameters:
                    keys.add(f'{name}.{param}')
    return keys


def _numpy_dtype(tensor: paddle.Tensor) -> np.dtype:
    return np.dtype(str(tensor.dtype).replace('paddle.', ''))


def convert_state_dict(torch_state: Mapping[str, np.ndarray], layer: nn.Layer, name: str = '') -> dict:
    """Map an official state dict (name → array, torch layout) onto ``layer``; returns name → array.

    The result has exactly the keys of ``layer.state_dict()``, Linear weights transposed to
    [in, out], each array in the layer's dtype and shape. Raises ``ConversionError`` listing
    every missing, extra and mis-shaped entry.
    """
    state = {}
    for key, value in torch_state.items():
        for old, new in _PARAMETRIZATION_NAMES:
            if key.endswith(old):
                key = key[:-len(old)] + new
        state[key] = value
    target = layer.state_dict()
    linear = linear_weight_keys(layer)
    missing = [k for k in target if k not in state]
    extra = [k for k in state if k not in target]
    misshaped, converted = [], {}
    for key, tensor in target.items():
        if key not in state:
            continue
        value = np.asarray(state[key])
        if key in linear:
            value = value.T if value.ndim == 2 else value      # [out, in] → [in, out]
        expected = tuple(tensor.shape)
        if value.shape != expected:
            layout = ' after transposing the Linear weight' if key in linear else ''
            misshaped.append(f'{key}: official {tuple(np.asarray(state[key]).shape)}{layout} '
                             f'gives {value.shape}, ours is {expected}')
            continue
        converted[key] = np.ascontiguousarray(value, dtype=_numpy_dtype(tensor))
    problems = ([f'missing {k}' for k in missing] + [f'extra {k}' for k in extra]
                + [f'mis-shaped {p}' for p in misshaped])
    if problems:
        where = f'{name}: ' if name else ''
        raise ConversionError(f'{where}the official weights do not fit our network '
                              f'({len(problems)} problem{"s" * (len(problems) > 1)}):\n  ' + '\n  '.join(problems))
    return converted


def load_converted(layer: nn.Layer, converted: Mapping[str, np.ndarray], name: str = '') -> None:
    """``layer.set_state_dict(converted)``, then check that every value landed.

    Paddle's set_state_dict only warns about missing or mis-shaped keys and keeps the old
    values, so its (missing, unexpected) result and the values themselves are checked.
    """
    missing, unexpected = layer.set_state_dict(dict(converted))
    if missing or unexpected:
        raise ConversionError(f'{name}: set_state_dict left missing {list(missing)}, unexpected {list(unexpected)}')
    differing = [k for k, v in layer.state_dict().items() if not np.array_equal(v.numpy(), converted[k])]
    if differing:
        raise ConversionError(f'{name}: values not loaded for {differing}')


# --------------------------------------------------------------------------- #
# Reading official checkpoints
# --------------------------------------------------------------------------- #
def read_official(path: str) -> dict:
    """{network: {name: array}} from an official ``.pt`` (read without torch) or a ``.npz``."""
    if path.endswith('.npz'):
        with np.load(path, allow_pickle=False) as data:
            nets = {}
            for key in data.files:
                net, sep, param = key.partition('/')
                if not sep:
                    net, _, param = key.partition('.')
                nets.setdefault(net, {})[param] = data[key]
    else:
        try:
            state = read_torch_file(path)
        except (OSError, ValueError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
            raise ConversionError(f'{path} is not a readable torch checkpoint: {e}') from None
        if not isinstance(state, Mapping):
            raise ConversionError(f'{path} holds a {type(state).__name__}, not a dict of state dicts')
        nets = {net: dict(sd) if isinstance(sd, Mapping) else sd for net, sd in state.items()}
    unknown = sorted(set(nets) - set(NETWORKS))
    absent = [n for n in NETWORKS if n not in nets]
    if unknown or absent:
        raise ConversionError(f'{path} is not an official U-GAT-IT checkpoint: '
                              + '; '.join(s for s in (f'missing networks {absent}' if absent else '',
                                                      f'unknown entries {unknown}' if unknown else '') if s))
    return nets


# --------------------------------------------------------------------------- #
# The architecture, from the shapes
# --------------------------------------------------------------------------- #
def light_and_size(fc_in: int, dim: int, img_size: int | None, fc: str) -> tuple[bool, int]:
    """(light, img_size) from the generator's first γ/β FC ``fc`` ([fc_in → dim]): light when it sees
    the pooled dim channels (the size is then ``img_size``, default 256), else the (img_size/4)²·dim
    flattened bottleneck, which fixes the size (a different ``img_size`` is an error)."""
    if fc_in == dim:
        return True, DEFAULT_LIGHT_IMG_SIZE if img_size is None else img_size
    side = math.isqrt(fc_in // dim)
    if side * side * dim != fc_in:
        raise ConversionError(f'{fc} sees {fc_in} values, not (img_size/4)²·{dim}')
    if img_size is not None and img_size != 4 * side:
        raise ConversionError(f'--img_size {img_size}, but this full model was trained at {4 * side} px '
                              f'({fc} sees {fc_in} = {side}·{side}·{dim} values)')
    return False, 4 * side


def infer_arch(official: dict, img_size: int | None = None) -> dict:
    """``--light``, ``--ch``, ``--n_res``, ``--n_dis``, ``--img_ch`` and ``--img_size`` of official weights.

    ch and img_ch come from the first convolution (DownBlock.1: [ch, img_ch, 7, 7]), light from
    FC.0 (light: [4ch, 4ch]; full: [4ch, (img_size/4)²·4ch], which also gives img_size), n_res
    from the UpBlock1_* count and n_dis from the global discriminator's depth (n_dis
    spectral-norm convolutions). A light model's shapes do not depend on the image size:
    it is ``img_size`` (default 256).
    """
    gen = official['genA2B']
    try:
        ch, img_ch = (int(d) for d in np.shape(gen['DownBlock.1.weight'])[:2])
        dim, fc_in = (int(d) for d in np.shape(gen['FC.0.weight']))
    except KeyError as e:
        raise ConversionError(f'genA2B has no {e}: not an official U-GAT-IT generator') from None
    if dim != 4 * ch:
        raise ConversionError(f'genA2B: FC.0 has {dim} outputs, expected 4·ch = {4 * ch}')
    light, size = light_and_size(fc_in, dim, img_size, 'genA2B: FC.0')
    n_res = sum(1 for k in gen if re.fullmatch(r'UpBlock1_\d+\.conv1\.weight', k))
    depth = {net: sum(1 for k in official[net] if re.fullmatch(r'model\.\d+\.weight_orig', k))
             for net in ('disGA', 'disLA')}
    n_dis = depth['disGA']            # global D: n_dis + 1 layers, n_dis SN convolutions in .model
    if depth['disLA'] != n_dis - 2:
        raise ConversionError(f'the local discriminator has {depth["disLA"] + 1} layers and the global one '
                              f'{n_dis + 1}: this port builds them with n_dis − 1 and n_dis + 1 (official: 5, 7)')
    return dict(DEFAULT_ARCH, light=light, img_size=size, ch=ch, n_res=n_res, n_dis=n_dis, img_ch=img_ch)


# --------------------------------------------------------------------------- #
# A whole checkpoint
# --------------------------------------------------------------------------- #
OFFICIAL_NAME = re.compile(r'(?P<dataset>.+)_params_(?P<step>\d+|latest)\.(pt|pth|npz)$')     # the official code's files
ARCHIVES = ('.zip', '.7z', '.rar', '.tar', '.tar.gz', '.tgz')


def is_tf_checkpoint(src: str) -> bool:
    """A TensorFlow checkpoint: a folder, a prefix with its .index, or one of its files."""
    return os.path.isdir(src) or os.path.exists(src + '.index') or bool(TF_FILE.search(src))


def destination(dst: str, dataset: str | None, step: int) -> str:
    """``dst`` itself when it names a .pdparams file, else ``<dst>/<dataset>_params_%07d.pdparams``."""
    if dst.endswith('.pdparams'):
        return dst
    if not dataset:
        raise ConversionError('--dst is a folder: pass --dataset to name the file')
    return os.path.join(dst, ckpt.checkpoint_name(dataset, step))


def check_source(src: str) -> None:
    """One-line ``ConversionError`` when ``src`` is neither a file or folder nor a TF checkpoint prefix."""
    if src.lower().endswith(ARCHIVES):
        raise ConversionError(f'{src} is an archive: unpack it first (7-Zip or unzip) and pass the folder it unpacks to')
    if not os.path.exists(src) and not os.path.exists(src + '.index'):
        raise ConversionError(f'{src} does not exist, and neither does {os.path.basename(src)}.index of a TF checkpoint '
                              f'prefix: check --src')


def convert_checkpoint(src: str, dst: str, step: int | None = None, img_size: int | None = None,
                       dataset: str | None = None, generators_only: bool = False) -> tuple[str, dict, dict]:
    """Convert official weights ``src`` (PyTorch or TensorFlow, detected) and write our checkpoint;
    returns (written path, arch, notes to print)."""
    check_source(src)
    if is_tf_checkpoint(src):
        return convert_tf_checkpoint(src, dst, step, img_size, dataset, generators_only)
    match = OFFICIAL_NAME.match(os.path.basename(src))
    if step is None:
        if not match or match.group('step') == 'latest':
            raise ConversionError(f'cannot read the step from the name {os.path.basename(src)!r} '
                                  f'(official: <dataset>_params_%07d.pt): pass --step')
        step = int(match.group('step'))
    dst = destination(dst, dataset or (match.group('dataset') if match else None), step)
    official = read_official(src)
    arch = infer_arch(official, img_size)
    state = {}
    for name in GENERATORS if generators_only else NETWORKS:
        net = build_network(name, arch)
        load_converted(net, convert_state_dict(official.pop(name), net, name), name)
        state[name] = net.state_dict()
    state.update(format=ckpt.FORMAT, step=int(step), arch=arch, converted_from=os.path.basename(src))
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    ckpt.write_checkpoint(dst, state)
    return dst, arch, {}


# --------------------------------------------------------------------------- #
# The authors' TensorFlow checkpoints (extras/tf_networks.py holds their architecture)
# --------------------------------------------------------------------------- #
TF_SCOPES = {'genA2B': 'generator_B', 'genB2A': 'generator_A',         # generator_B translates A → B
             'disGA': 'discriminator_A/global', 'disGB': 'discriminator_B/global',
             'disLA': 'discriminator_A/local', 'disLB': 'discriminator_B/local'}
TF_POWERS = {'G_optim': ('beta1_power', 'beta2_power'), 'D_optim': ('beta1_power_1', 'beta2_power_1')}


def tf_variable(layers: dict[str, nn.Layer], key: str) -> str:
    """The TF variable (below the network's scope) of our state-dict key: layer paths are the TF scopes;
    tf.layers convolutions and dense layers add a 'conv2d'/'dense' scope, and a spectral norm's u sits
    beside its kernel (``conv_0.spectral_norm.u`` → ``conv_0/u``). ``layers``: the network's named sublayers."""
    path, _, leaf = key.rpartition('.')
    if path.endswith('.spectral_norm') or path == 'spectral_norm':
        return path.rpartition('spectral_norm')[0].rstrip('.').replace('.', '/') + '/' + leaf
    layer = layers[path]
    inner = {TFConv: 'conv2d/', TFDense: 'dense/'}.get(type(layer), '')
    if isinstance(layer, TFConv) and layer.spectral_norm is not None:
        inner = ''
    return f'{path.replace(".", "/")}/{inner}{leaf}'


def _from_tf(reader: TFCheckpoint, name: str, shape: list, conv_kernel: bool) -> ckpt.LazyArray:
    """The TF tensor ``name`` in our layout (conv kernels HWIO → [out, in, kh, kw]), read only when written."""
    def compute():
        value = reader.get(name)
        value = value.transpose(3, 2, 0, 1) if conv_kernel else value
        if list(value.shape) != list(shape):
            raise ConversionError(f'{reader.prefix}: {name} has shape {list(value.shape)}, the TF architecture '
                                  f'built from the other weights needs {list(shape)}')
        return np.ascontiguousarray(value, dtype=np.float32)
    return ckpt.LazyArray(compute)


def infer_tf_arch(reader: TFCheckpoint, img_size: int | None, smoothing: bool) -> dict:
    """light, img_size, ch, n_res, n_dis, img_ch of an authors' checkpoint, from the shapes (like ``infer_arch``)."""
    def shape(name):
        if name not in reader:
            raise ConversionError(f'{reader.prefix} has no {name}: not a checkpoint of the authors\' U-GAT-IT code')
        return list(reader.entry(name).shape)
    _, _, img_ch, ch = shape('generator_B/conv/conv2d/kernel')
    fc_in, dim = shape('generator_B/MLP/linear_0/dense/kernel')
    light, size = light_and_size(fc_in, dim, img_size, 'generator_B/MLP/linear_0')
    n_res = len({n for n in reader.names() if re.fullmatch(r'generator_B/resblock_\d+/res1/conv_0/conv2d/kernel', n)})
    n_global = len({n for n in reader.names() if re.fullmatch(r'discriminator_A/global/conv_\d+/kernel', n)})
    n_dis = n_global + 1 if n_global else 6                # a generators-only checkpoint: the TF default
    return dict(DEFAULT_ARCH, arch='tf', light=light, img_size=size, ch=ch, n_res=n_res, n_dis=n_dis, img_ch=img_ch,
                smoothing=smoothing)


def convert_tf_checkpoint(src: str, dst: str, step: int | None = None, img_size: int | None = None,
                          dataset: str | None = None, generators_only: bool = False) -> tuple[str, dict, dict]:
    """The authors' TF checkpoint (a prefix, its folder or the release folder) → our checkpoint with
    ``--arch tf``: networks, and when the checkpoint has them (a training checkpoint) both Adam states
    with their step counters, so that ``--resume True`` continues as the TF code would. Each tensor is
    read (CRC32C-checked) only while it is written: the memory peak is about one tensor."""
    reader = TFCheckpoint(src)
    model_dir = os.path.basename(os.path.dirname(reader.prefix))
    smoothing, smoothing_from = tf_smoothing(model_dir)
    arch = infer_tf_arch(reader, img_size, smoothing)
    step = prefix_step(reader.prefix) if step is None else step
    if step is None:
        raise ConversionError(f'cannot read the step from the name {os.path.basename(reader.prefix)!r} '
                              f'(the authors\': UGATIT.model-<step>): pass --step')
    named = MODEL_DIR.match(model_dir)
    dst = destination(dst, dataset or (named['dataset'] if named else None), step)
    has_discriminators = 'discriminator_A/global/conv_0/kernel' in reader
    names = NETWORKS if has_discriminators and not generators_only else GENERATORS
    state, optimizers, used = {}, {}, {p for powers in TF_POWERS.values() for p in powers if p in reader}
    for name in names:
        with paddle.LazyGuard():                     # shapes only: nothing allocated
            network = build_network(name, arch)
        expected, layers = network.state_dict(), dict(network.named_sublayers())
        variables = {key: f'{TF_SCOPES[name]}/{tf_variable(layers, key)}' for key in expected}
        used |= {v + slot for v in variables.values() for slot in ('', '/Adam', '/Adam_1') if v + slot in reader}
        missing = [v for v in variables.values() if v not in reader]
        if missing:
            raise ConversionError(f'{reader.prefix} lacks {len(missing)} variables of {TF_SCOPES[name]}, e.g. '
                                  f'{missing[:3]}: not a checkpoint of the authors\' U-GAT-IT code with these shapes')
        conv_kernels = {key for key in expected if key.endswith('kernel') and len(expected[key].shape) == 4}
        state[name] = {key: _from_tf(reader, variables[key], list(expected[key].shape), key in conv_kernels)
                       for key in expected}
        if names == NETWORKS and variables['conv_0.kernel'] + '/Adam' in reader:      # a training checkpoint
            optimizer = 'G_optim' if name.startswith('gen') else 'D_optim'
            optimizers.setdefault(optimizer, {}).update(tf_adam_state(reader, name, network, variables, conv_kernels,
                                                                      TF_POWERS[optimizer]))
    unused = [] if generators_only else sorted(set(reader.names()) - used)
    if unused:
        raise ConversionError(f'{reader.prefix} holds {len(unused)} variables the authors\' U-GAT-IT does not have, '
                              f'e.g. {unused[:3]}: not their checkpoint, or another version of their code')
    state.update(optimizers)
    state.update(format=ckpt.FORMAT, step=int(step), arch=arch, converted_from=reader.prefix)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    ckpt.write_checkpoint(dst, state)
    return dst, arch, {'networks': list(names), 'adam': sorted(optimizers), 'rho': rho_statistics(reader),
                       'smoothing': f'{smoothing} ({smoothing_from})'}


def tf_smoothing(folder: str) -> tuple[bool, str]:
    """AdaLIN smoothing of a TF checkpoint (a graph option, not a variable): from the folder name the
    TF code gives it (``..._sn_smoothing``), else the TF default, as the release."""
    if MODEL_DIR.match(folder):
        return folder.endswith('_smoothing'), f'the folder name {folder}'
    return True, 'the TF code\'s default; the folder name does not say'


def tf_adam_state(reader: TFCheckpoint, name: str, network: nn.Layer, variables: dict, conv_kernels: set,
                  powers: tuple[str, str]) -> dict:
    """A network's Adam state in our portable names (``checkpoints.portable_optimizer_state``): the TF
    slots ``<var>/Adam`` (m) and ``<var>/Adam_1`` (v), and the optimizer's β1^t, β2^t for every parameter."""
    beta_powers = [np.asarray(reader.get(power), np.float32).reshape([1]) for power in powers]
    state = {}
    for key, param in network.named_parameters():
        shape, kernel = list(param.shape), key in conv_kernels
        state[f'{name}.{key}_moment1_0'] = _from_tf(reader, variables[key] + '/Adam', shape, kernel)
        state[f'{name}.{key}_moment2_0'] = _from_tf(reader, variables[key] + '/Adam_1', shape, kernel)
        state[f'{name}.{key}_beta1_pow_acc_0'], state[f'{name}.{key}_beta2_pow_acc_0'] = beta_powers
    return state


def rho_statistics(reader: TFCheckpoint) -> dict:
    """min / mean / max of AdaLIN's and LIN's ρ in both generators (ρ ≤ 0.9 everywhere would hint at a
    checkpoint from before the TF code's smoothing, which caps the effective ρ at 0.9)."""
    stats = {}
    for kind, pattern in (('AdaLIN', r'generator_[AB]/adaptive_resblock\d+/res\d/instance_layer_norm/rho'),
                          ('LIN', r'generator_[AB]/layer_ins_norm_\d/rho')):
        values = np.concatenate([reader.get(n).ravel() for n in reader.names() if re.fullmatch(pattern, n)] or [np.zeros(0)])
        if values.size:
            stats[kind] = {'min': float(values.min()), 'mean': float(values.mean()), 'max': float(values.max())}
    return stats
