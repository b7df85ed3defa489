"""Reads TensorFlow 1.x ``tf.train.Saver`` V2 checkpoints with numpy alone (no TensorFlow).

A V2 checkpoint ``<prefix>`` is a tensor bundle (tensorflow/core/util/tensor_bundle/):

- ``<prefix>.index``: a LevelDB-format table (tensorflow/core/lib/io/format.cc, block.cc,
  table_builder.cc; leveldb doc/table_format.md) mapping each variable name to a ``BundleEntryProto``;
  the empty key holds the ``BundleHeaderProto`` (tensorflow/core/protobuf/tensor_bundle.proto).
- ``<prefix>.data-SSSSS-of-NNNNN`` (naming.cc): the raw tensor bytes, at ``[offset, offset + size)`` of
  shard ``shard_id``, each tensor checksummed with a masked CRC32C (tensor_bundle.cc BundleWriter::Add).
- ``checkpoint`` beside them: a text CheckpointState proto whose ``model_checkpoint_path`` names the newest
  prefix (tensorflow/python/training/checkpoint_management.py).

Usage::

    with TFCheckpoint('checkpoint/UGATIT_selfie2anime_lsgan_..._sn_smoothing') as ckpt:
        kernel = ckpt.get('generator_B/conv_0/conv2d/kernel')   # read-only np.memmap, CRC32C checked

Supported: every numeric dtype numpy has, and bool; single- and multi-shard bundles; little- and big-endian
writers. Not supported, each with an error that names it: string/variant/resource/bfloat16/quantized
tensors and partitioned variables (``slices``); U-GAT-IT's checkpoints hold none. CRC32C checks (index
blocks always, tensors unless ``verify=False``) use the ``crc32c`` package, which visualdl pulls in.
"""
from __future__ import annotations

import codecs
import dataclasses
import difflib
import glob
import math
import os
import re
import struct

import numpy as np

_MAGIC = 0xdb4775248b80fb57  # kTableMagicNumber (format.h)
_FOOTER = 48                 # metaindex + index BlockHandles padded to 2 * 20 bytes, then the magic
_TRAILER = 5                 # kBlockTrailerSize: compression type byte + masked CRC32C
_BUNDLE_VERSION = 1          # kTensorBundleVersion (tensor_bundle.cc)
# DataType (tensorflow/core/framework/types.proto) -> numpy; the other codes are named in errors.
_NUMPY = {1: 'float32', 2: 'float64', 3: 'int32', 4: 'uint8', 5: 'int16', 6: 'int8', 8: 'complex64',
          9: 'int64', 10: 'bool', 17: 'uint16', 18: 'complex128', 19: 'float16', 22: 'uint32', 23: 'uint64'}
_OTHER = {0: 'invalid', 7: 'string', 11: 'qint8', 12: 'quint8', 13: 'qint32', 14: 'bfloat16',
          15: 'qint16', 16: 'quint16', 20: 'resource', 21: 'variant'}
# The authors' names: a checkpoint's files after its prefix ``<model_dir>/UGATIT[_light].model-<step>``,
# and the model_dir their code names after its options (UGATIT[_light]_<dataset>_<gan>_<n>resblock_<n>dis_…).
TF_FILE = re.compile(r'\.(index|meta|data-\d+-of-\d+)$')
MODEL_DIR = re.compile(r'UGATIT(?:_light)?_(?P<dataset>.+)_(?:gan|lsgan|wgan-gp|wgan-lp|dragan|hinge)_\d+resblock_\d+dis_')
_REDOWNLOAD = 're-download the checkpoint (unpack the release zip with 7-Zip if unzip fails)'


class TFCheckpointError(ValueError):
    """A checkpoint that cannot be read: the message names the file, what is wrong and what to do."""


class _Corrupt(Exception):
    """Malformed bytes inside the .index; TFCheckpoint turns it into a TFCheckpointError naming the file."""


def _crc32c(data) -> int:
    try:
        import crc32c
    except ImportError:
        raise TFCheckpointError('reading TF checkpoints needs the crc32c package: pip install crc32c') from None
    return crc32c.crc32c(data)


def _unmask(masked: int) -> int:
    """Inverse of crc32c::Mask, ((crc >> 15 | crc << 17) + 0xa282ead8) mod 2**32 (tensorflow/core/lib/hash/crc32c.h)."""
    rot = (masked - 0xa282ead8) & 0xffffffff
    return ((rot >> 17) | (rot << 15)) & 0xffffffff


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A little-endian base-128 varint at buf[pos:end] (at most 10 bytes) and the position after it."""
    value = 0
    for shift in range(0, 70, 7):
        if pos >= end:
            raise _Corrupt('truncated varint')
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7f) << shift
        if byte < 0x80:
            return value, pos
    raise _Corrupt('varint longer than 10 bytes')


def _message(buf: bytes, wire_types: dict[int, int]) -> dict[int, list]:
    """Decodes a protobuf message into {field: [values]} for the fields in wire_types (field -> wire type:
    0 varint, 2 bytes, 5 fixed32); fields not listed are skipped, a listed field of another type is corrupt."""
    fields: dict[int, list] = {}
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            value, pos = int.from_bytes(buf[pos:pos + width], 'little'), pos + width
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            value, pos = buf[pos:pos + length], pos + length
        else:
            raise _Corrupt(f'protobuf wire type {wire}')
        if pos > end or wire_types.get(number, wire) != wire:
            raise _Corrupt('malformed protobuf')
        if number in wire_types:
            fields.setdefault(number, []).append(value)
    return fields


def _last(fields: dict[int, list], number: int, default=0):
    """A scalar field's value: its last occurrence wins (protobuf); absent, the default."""
    return fields.get(number, [default])[-1]


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclasses.dataclass(frozen=True)
class TFHeader:
    """The BundleHeaderProto under the empty key (tensor_bundle.proto)."""
    num_shards: int
    big_endian: bool
    producer: int
    min_consumer: int


@dataclasses.dataclass(frozen=True)
class TFEntry:
    """One BundleEntryProto (tensor_bundle.proto): what a variable holds and where its bytes are."""
    name: str
    dtype: str                # numpy dtype name, or the TF name of an unsupported type ('string', ...)
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int                 # bytes in the data file
    crc32c: int               # CRC32C of those bytes (unmasked)
    num_slices: int = 0       # > 0: a partitioned variable, whose bytes live in per-slice entries


def _parse_entry(name: str, value: bytes) -> TFEntry:
    f = _message(value, {1: 0, 2: 2, 3: 0, 4: 0, 5: 0, 6: 5, 7: 2})
    shape = []
    for shape_proto in f.get(2, []):  # TensorShapeProto: repeated Dim dim = 2 {int64 size = 1}; unknown_rank = 3
        s = _message(shape_proto, {2: 2, 3: 0})
        if _last(s, 3):
            raise _Corrupt(f'{name!r} has an unknown rank')
        shape += [_int64(_last(_message(dim, {1: 0}), 1)) for dim in s.get(2, [])]
    dtype = _NUMPY.get(_last(f, 1)) or _OTHER.get(_last(f, 1), f'DataType {_last(f, 1)}')
    entry = TFEntry(name, dtype, tuple(shape), _last(f, 3), _int64(_last(f, 4)), _int64(_last(f, 5)),
                    _unmask(_last(f, 6)), len(f.get(7, [])))
    if min(shape, default=0) < 0 or entry.offset < 0 or entry.size < 0:
        raise _Corrupt(f'{name!r} has a negative dimension, offset or size')
    if dtype in _NUMPY.values() and not entry.num_slices \
            and entry.size != math.prod(shape) * np.dtype(dtype).itemsize:
        raise _Corrupt(f'{name!r} is {dtype} {list(shape)} but is said to take {entry.size} bytes')
    return entry


def _block(index: bytes, handle: bytes, what: str) -> bytes:
    """The contents of the block a BlockHandle (varint offset, varint size) points to, CRC-checked
    (format.cc ReadBlock)."""
    offset, pos = _varint(handle, 0, len(handle))
    size, _ = _varint(handle, pos, len(handle))
    if offset + size + _TRAILER > len(index) - _FOOTER:
        raise _Corrupt(f'the {what} block at byte {offset} runs past the end of the file')
    body = index[offset:offset + size + 1]  # contents + compression type byte, as checksummed
    if _crc32c(body) != _unmask(struct.unpack_from('<I', index, offset + size + 1)[0]):
        raise _Corrupt(f'the {what} block at byte {offset} fails its CRC32C check')
    if body[-1] != 0:
        raise _Corrupt(f'the {what} block is compressed (type {body[-1]}), which TF never writes for checkpoints')
    return body[:-1]


def _block_items(block: bytes) -> list[tuple[bytes, bytes]]:
    """Key/value pairs of a block (block_builder.cc): entries (varint32 shared, unshared, value_length, key
    delta, value), then the fixed32 offsets of the restart points (where shared == 0) and their count."""
    if len(block) < 4:
        raise _Corrupt('a block shorter than its restart count')
    num_restarts = struct.unpack_from('<I', block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * num_restarts
    if limit < 0:
        raise _Corrupt('a block shorter than its restart array')
    restarts = set(struct.unpack_from(f'<{num_restarts}I', block, limit))
    items, starts, key, pos = [], set(), b'', 0
    while pos < limit:
        starts.add(pos)
        restart = pos in restarts
        shared, pos = _varint(block, pos, limit)
        unshared, pos = _varint(block, pos, limit)
        value_length, pos = _varint(block, pos, limit)
        if shared > len(key) or (restart and shared) or pos + unshared + value_length > limit:
            raise _Corrupt('a bad entry in a block')
        key = key[:shared] + block[pos:pos + unshared]
        items.append((key, block[pos + unshared:pos + unshared + value_length]))
        pos += unshared + value_length
    if not restarts <= starts:
        raise _Corrupt('a restart point that is not an entry')
    return items


def _read_table(index: bytes) -> list[tuple[bytes, bytes]]:
    """All key/value pairs of a LevelDB table, in order: footer -> index block -> data blocks."""
    if len(index) < _FOOTER or int.from_bytes(index[-8:], 'little') != _MAGIC:
        raise _Corrupt('no LevelDB table footer (truncated, or not a .index file)')
    pos = len(index) - _FOOTER
    for _ in range(2):  # skip the metaindex handle (offset, size): TF writes no meta blocks
        _, pos = _varint(index, pos, len(index) - 8)
    items = []
    for _, handle in _block_items(_block(index, index[pos:len(index) - 8], 'index')):
        items += _block_items(_block(index, handle, 'data'))
    if any(a[0] >= b[0] for a, b in zip(items, items[1:])):
        raise _Corrupt('keys out of order')
    return items


def _in_folder(folder: str) -> str | None:
    """The prefix a folder's ``checkpoint`` file names, else its *.index with the highest ``-<step>`` (then the
    newest), else None. A name is relative to the folder; an absolute one from the machine that saved the
    checkpoint falls back to its basename in the folder."""
    indexes = glob.glob(os.path.join(glob.escape(folder), '*.index'))
    state = os.path.join(folder, 'checkpoint')
    if not os.path.isfile(state):
        def step_then_time(path: str) -> tuple[int, float]:
            step = prefix_step(path[:-len('.index')])
            return -1 if step is None else step, os.path.getmtime(path)
        return max(indexes, key=step_then_time)[:-len('.index')] if indexes else None
    with open(state, encoding='utf-8', errors='replace') as f:
        match = re.search(r'^\s*model_checkpoint_path\s*:\s*"((?:[^"\\]|\\.)*)"', f.read(), re.M)
    if not match:
        raise TFCheckpointError(f'{state} has no model_checkpoint_path line: pass the checkpoint prefix instead')
    named = codecs.escape_decode(match.group(1).encode())[0].decode('utf-8', 'replace')  # text-format C escapes
    local = os.path.join(folder, re.split(r'[\\/]', named)[-1])
    for candidate in (os.path.join(folder, named), local):  # join keeps an absolute `named`
        if os.path.isfile(candidate + '.index'):
            return candidate
    others = ', '.join(sorted(os.path.basename(p) for p in indexes))
    raise TFCheckpointError(f'{state} names {named!r}, but {local}.index does not exist'
                            + (f' (the folder holds {others}: pass that prefix)' if others else ''))


def prefix_step(prefix: str) -> int | None:
    """The step in a checkpoint prefix's name (``UGATIT.model-1000000``), None when it has none."""
    match = re.search(r'-(\d+)$', prefix)
    return int(match.group(1)) if match else None


def find_checkpoint(path: str) -> str:
    """The checkpoint prefix (``.../UGATIT.model-1000000``) that path stands for.

    path may be the prefix itself; its .index, .data-… or .meta file; a folder holding a ``checkpoint``
    file (its model_checkpoint_path is used) or else *.index files (the highest step is used); the
    ``checkpoint`` file; or a folder one level up holding exactly one such folder (the release's
    ``checkpoint/``, holding one model_dir folder). Raises TFCheckpointError naming what was looked for.
    """
    path = os.path.expanduser(os.fspath(path))
    if os.path.basename(path) == 'checkpoint' and os.path.isfile(path):
        path = os.path.dirname(path)
    path = TF_FILE.sub('', path)
    if os.path.isfile(path + '.index'):
        return path
    if os.path.isdir(path):
        found = _in_folder(path)
        if found:
            return found
        below = [p for p in (_in_folder(os.path.join(path, d)) for d in sorted(os.listdir(path))) if p]
        if len(below) == 1:
            return below[0]
        if below:
            raise TFCheckpointError(f'{path} holds {len(below)} checkpoints ({", ".join(below)}): pass one of them')
        raise TFCheckpointError(f'no TF checkpoint in folder {path}: found no `checkpoint` file and no *.index '
                                'file in it or in its subfolders')
    if glob.glob(glob.escape(path) + '.data-*') or os.path.isfile(path + '.meta'):
        raise TFCheckpointError(f'{path}.index is missing (the checkpoint\'s other files are there): {_REDOWNLOAD}')
    raise TFCheckpointError(f'no TF checkpoint at {path}: it is not a folder, and {path}.index does not exist')


class TFCheckpoint:
    """A V2 checkpoint opened for reading: parses only the .index, then maps tensors from the data files on demand.

    ``path`` is anything find_checkpoint accepts. Checks at once that every data file exists and is long
    enough for its entries (a truncated download fails here, not halfway through a conversion).
    """

    def __init__(self, path: str):
        self.prefix = find_checkpoint(path)
        index = self.prefix + '.index'
        with open(index, 'rb') as f:
            data = f.read()
        try:
            items = _read_table(data)
            if not items or items[0][0] != b'':
                raise _Corrupt('no header entry')
            h = _message(items[0][1], {1: 0, 2: 0, 3: 2})
            version = _message(_last(h, 3, b''), {1: 0, 2: 0})  # VersionDef: producer = 1, min_consumer = 2
            self.header = TFHeader(_last(h, 1), _last(h, 2) == 1, _last(version, 1), _last(version, 2))
            # Keys of the slices of partitioned variables start with b'\0' (EncodeTensorNameSlice, OrderedCode):
            # checked like the rest, but not listed, as in tf.train.list_variables.
            entries = [_parse_entry(key.decode('utf-8', 'backslashreplace'), value) for key, value in items[1:]]
            if any(not 0 <= e.shard_id < self.header.num_shards for e in entries if not e.num_slices):
                raise _Corrupt(f'a shard id outside the header\'s {self.header.num_shards} shards')
        except _Corrupt as e:
            raise TFCheckpointError(f'{index} is corrupt ({e}): {_REDOWNLOAD}') from None
        if self.header.min_consumer > _BUNDLE_VERSION:
            raise TFCheckpointError(f'{index} needs a reader of bundle version {self.header.min_consumer} '
                                    f'(this one reads version {_BUNDLE_VERSION})')
        self._entries = {e.name: e for e in entries if not e.name.startswith('\0')}
        self._check_data_files(entries)

    def _check_data_files(self, entries: list[TFEntry]) -> None:
        needed: dict[int, int] = {}  # shard -> bytes its entries span (a dict: num_shards is not trusted)
        for e in entries:
            if not e.num_slices:
                needed[e.shard_id] = max(needed.get(e.shard_id, 0), e.offset + e.size)
        for shard, need in sorted(needed.items()):
            path = self.data_path(shard)
            if not os.path.isfile(path):
                raise TFCheckpointError(f'{path} is missing (the .index lists {self.header.num_shards} data '
                                        f'file(s)): {_REDOWNLOAD}')
            have = os.path.getsize(path)
            if have < need:
                raise TFCheckpointError(f'{path} is truncated: {have:,} bytes, but the .index needs {need:,} '
                                        f'({have / need:.0%} present): {_REDOWNLOAD}')

    def data_path(self, shard: int) -> str:
        """The data file of one shard (naming.cc DataFilename)."""
        return f'{self.prefix}.data-{shard:05d}-of-{self.header.num_shards:05d}'

    def names(self) -> list[str]:
        """Variable names, sorted (table order)."""
        return list(self._entries)

    def entry(self, name: str) -> TFEntry:
        """Dtype, shape and location of one variable; KeyError (with close names) if it is not stored."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=3)
            raise KeyError(f'{name!r} is not in {self.prefix}.index'
                           + (f'; close names: {", ".join(close)}' if close else ''))
        return self._entries[name]

    def get(self, name: str, verify: bool = True) -> np.ndarray:
        """One variable as a read-only np.memmap of its bytes in the data file (nothing else is read).

        verify reads the tensor once to check its CRC32C; verify=False maps it without touching it.
        """
        e = self.entry(name)
        if e.num_slices:
            raise TFCheckpointError(f'{self.prefix}: {name!r} is a partitioned variable ({e.num_slices} slices), '
                                    'which this reader does not support')
        if e.dtype not in _NUMPY.values():
            raise TFCheckpointError(f'{self.prefix}: {name!r} has dtype {e.dtype}, which this reader does not '
                                    'support (numeric and bool tensors only)')
        dtype = np.dtype(e.dtype).newbyteorder('>' if self.header.big_endian else '<')
        path = self.data_path(e.shard_id)
        if e.size == 0:  # mmap cannot map zero bytes
            array = np.zeros(e.shape, dtype)
            array.flags.writeable = False
            return array
        array = np.memmap(path, dtype=dtype, mode='r', offset=e.offset, shape=e.shape)
        if verify and _crc32c(memoryview(array.reshape(-1)).cast('B')) != e.crc32c:
            raise TFCheckpointError(f'{path} is corrupt: the {e.size:,} bytes of {name!r} at offset {e.offset:,} '
                                    f'fail their CRC32C check: {_REDOWNLOAD}')
        return array

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self):
        return iter(self._entries)

    def __repr__(self) -> str:
        return f'TFCheckpoint({self.prefix!r}, {len(self)} variables)'

    def close(self) -> None:
        """Nothing to release: each array from get() holds its own mapping and stays valid."""

    def __enter__(self) -> TFCheckpoint:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
