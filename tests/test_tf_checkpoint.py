"""extras/tf_checkpoint.py on the TF checkpoint the authors' U-GAT-IT code wrote (tests/fixtures/tf/light), without
TensorFlow. Every failure is made here by copying the fixture and damaging the copy."""
import math
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from extras import tf_checkpoint
from conftest import copy_checkpoint, data_file, rewrite_entries, varint, write_table
from extras.tf_checkpoint import TFCheckpoint, TFCheckpointError, find_checkpoint

FIXTURE_ROOT = Path(__file__).parent / 'fixtures' / 'tf' / 'light' / 'checkpoint'


@pytest.fixture(scope='module')
def folder() -> Path:
    """The fixture's model_dir folder (checkpoint/<model_dir>/ as the TF code lays it out)."""
    folders = sorted({p.parent for p in FIXTURE_ROOT.glob('*/*.index')})
    assert len(folders) == 1, f'expected one checkpoint folder under {FIXTURE_ROOT}, found {folders}'
    return folders[0]


@pytest.fixture(scope='module')
def prefix(folder) -> str:
    """The prefix the fixture's `checkpoint` file names (read here with a plain regex)."""
    name = re.search(r'^model_checkpoint_path: "(.*)"$', (folder / 'checkpoint').read_text(), re.M).group(1)
    assert (folder / (name + '.index')).is_file()
    return str(folder / name)


@pytest.fixture(scope='module')
def ckpt(prefix) -> TFCheckpoint:
    return TFCheckpoint(prefix)


def field(number: int, value) -> bytes:
    """One protobuf field: varint for ints, length-delimited for bytes."""
    if isinstance(value, bytes):
        return varint(number << 3 | 2) + varint(len(value)) + value
    return varint(number << 3) + varint(value)


def assert_error(match: str, path: str, call, *args):
    """call(*args) raises one TFCheckpointError line naming path and matching match."""
    with pytest.raises(TFCheckpointError, match=match) as info:
        call(*args)
    message = str(info.value)
    assert path in message and '\n' not in message, message
    return message


# --- the fixture, read whole ---

def test_variables_are_self_consistent(ckpt, prefix):
    names = ckpt.names()
    assert names == sorted(names) and len(ckpt) == len(names) > 10
    assert any(n.startswith('generator_B/') for n in names) and any(n.startswith('discriminator_A') for n in names)
    extents = []
    for name in names:
        e = ckpt.entry(name)
        assert name in ckpt and e.name == name and not e.num_slices
        assert e.size == math.prod(e.shape) * np.dtype(e.dtype).itemsize, name
        extents.append((e.offset, e.offset + e.size))
        if name.endswith('/Adam'):  # both Adam moments of every trained variable, shaped like it
            base = name[:-len('/Adam')]
            assert ckpt.entry(base).shape == e.shape == ckpt.entry(base + '/Adam_1').shape, name
            assert (ckpt.get(base + '/Adam_1') >= 0).all(), 'second moments are non-negative'
    assert sum(n.endswith('/Adam') for n in names) == sum(n.endswith('/Adam_1') for n in names) > 0
    powers = [n for n in names if n.startswith(('beta1_power', 'beta2_power'))]
    assert len(powers) >= 2 and all(ckpt.entry(n).shape == () and 0 < ckpt.get(n) < 1 for n in powers)
    # The tensors tile the data file: no overlaps, nothing past its end (TF writes them back to back).
    extents.sort()
    assert all(end <= start for (_, end), (start, _) in zip(extents, extents[1:]))
    assert extents[-1][1] == os.path.getsize(data_file(prefix))


def test_values_are_the_same_with_and_without_verify(ckpt):
    for name in ckpt.names():
        e = ckpt.entry(name)
        checked, unchecked = ckpt.get(name), ckpt.get(name, verify=False)
        assert checked.shape == unchecked.shape == e.shape and checked.dtype == np.dtype(e.dtype), name
        assert np.array_equal(checked, unchecked) and not checked.flags.writeable, name
        if checked.dtype.kind == 'f':
            assert np.isfinite(checked).all(), name
        assert isinstance(checked, np.memmap) or e.size == 0, name


def test_find_checkpoint_accepts_every_form(folder, prefix):
    for path in (folder, FIXTURE_ROOT, prefix, prefix + '.index', prefix + '.meta', data_file(prefix),
                 folder / 'checkpoint'):
        assert find_checkpoint(str(path)) == prefix, path
    assert TFCheckpoint(str(FIXTURE_ROOT)).prefix == prefix


def test_find_checkpoint_without_or_with_a_foreign_checkpoint_file(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    copy = os.path.dirname(prefix)
    # An absolute path from the machine that saved it: the same name in this folder is used.
    Path(copy, 'checkpoint').write_text(f'model_checkpoint_path: "/home/someone/checkpoint/{Path(prefix).name}"\n')
    assert find_checkpoint(copy) == prefix
    # No `checkpoint` file: the *.index with the highest step, not the newest or the last in name order.
    os.remove(os.path.join(copy, 'checkpoint'))
    shutil.copy(prefix + '.index', os.path.join(copy, 'UGATIT_light.model-10.index'))
    shutil.copy(prefix + '.index', os.path.join(copy, 'UGATIT_light.model-9.index'))
    os.utime(os.path.join(copy, 'UGATIT_light.model-10.index'), (1, 1))
    assert find_checkpoint(copy) == os.path.join(copy, 'UGATIT_light.model-10')


# --- every failure names its file and the problem ---

def test_missing_path_names_what_was_looked_for(tmp_path):
    missing = str(tmp_path / 'nowhere' / 'UGATIT.model-1000000')
    assert_error('no TF checkpoint at .*is not a folder', missing + '.index', find_checkpoint, missing)


def test_folder_without_a_checkpoint(tmp_path):
    (tmp_path / 'empty_model_dir').mkdir()
    assert_error('no TF checkpoint in folder', str(tmp_path), TFCheckpoint, str(tmp_path))


def test_checkpoint_file_naming_a_missing_prefix(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    state = os.path.join(os.path.dirname(prefix), 'checkpoint')
    Path(state).write_text('model_checkpoint_path: "UGATIT_light.model-999"\n')
    message = assert_error('names .*UGATIT_light.model-999.*does not exist', state, find_checkpoint,
                           os.path.dirname(prefix))
    assert os.path.basename(prefix) + '.index' in message  # and points at what is there


def test_missing_index(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    for suffix in ('.index', '.meta'):  # the release has a .meta, the fixture may not: the .data file suffices
        if os.path.exists(prefix + suffix):
            os.remove(prefix + suffix)
    assert_error(r'\.index is missing', prefix + '.index', TFCheckpoint, prefix)


@pytest.mark.parametrize('damage, problem', [
    pytest.param(lambda b: b[:-1] + bytes([b[-1] ^ 1]), 'no LevelDB table footer', id='bad_magic'),
    pytest.param(lambda b: b[:len(b) // 2], 'no LevelDB table footer', id='truncated'),
    pytest.param(lambda b: b[:5] + bytes([b[5] ^ 0x40]) + b[6:], 'fails its CRC32C', id='bad_block_crc'),
    pytest.param(lambda b: b[:-48] + (varint(0) * 2 + varint(1 << 40) + varint(1)).ljust(40, b'\0') + b[-8:],
                 'runs past the end', id='index_handle_past_the_end'),
])
def test_corrupt_index(prefix, tmp_path, damage, problem):
    prefix = copy_checkpoint(prefix, tmp_path)
    index = Path(prefix + '.index')
    index.write_bytes(damage(index.read_bytes()))
    assert_error(f'is corrupt .*{problem}.*re-download', str(index), TFCheckpoint, prefix)


def test_truncated_data_file(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    path = data_file(prefix)
    size = os.path.getsize(path)
    os.truncate(path, size // 2)
    assert_error(f'is truncated: {size // 2:,} bytes, but the .index needs {size:,} .*re-download.*7-Zip',
                 path, TFCheckpoint, prefix)


def test_missing_data_file(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    path = data_file(prefix)
    os.remove(path)
    assert_error('is missing .*re-download', path, TFCheckpoint, prefix)


def test_corrupted_tensor_byte_fails_its_crc(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    ckpt = TFCheckpoint(prefix)
    name = max(ckpt.names(), key=lambda n: ckpt.entry(n).size)
    e = ckpt.entry(name)
    original = np.array(ckpt.get(name))
    with open(data_file(prefix), 'r+b') as f:  # flip one bit in the middle of the tensor
        f.seek(e.offset + e.size // 2)
        byte = f.read(1)[0]
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte ^ 0x10]))
    ckpt = TFCheckpoint(prefix)  # the index and the file sizes are fine
    message = assert_error('is corrupt: .* fail their CRC32C check', data_file(prefix), ckpt.get, name)
    assert repr(name) in message
    assert not np.array_equal(ckpt.get(name, verify=False), original)  # verify=False maps the damaged bytes
    others = [n for n in ckpt.names() if n != name]
    assert all(ckpt.get(n) is not None for n in others)  # the other tensors still check out


def test_unsupported_dtype_is_named(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    victim = TFCheckpoint(prefix).names()[0]
    # Appending a field overrides it (protobuf: the last one wins): DT_STRING = 7.
    rewrite_entries(prefix, lambda name, value: value + field(1, 7) if name == victim else value)
    ckpt = TFCheckpoint(prefix)
    assert ckpt.entry(victim).dtype == 'string'
    assert_error(re.escape(f'{victim!r} has dtype string, which this reader does not support'), prefix, ckpt.get,
                 victim)
    assert ckpt.get(ckpt.names()[1]) is not None


def test_partitioned_variable_is_refused(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    victim = TFCheckpoint(prefix).names()[-1]
    rewrite_entries(prefix, lambda name, value: value + field(7, b'') if name == victim else value)
    assert_error(re.escape(f'{victim!r} is a partitioned variable'), prefix, TFCheckpoint(prefix).get, victim)


def test_sizes_in_the_index_never_drive_an_allocation(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    victim = TFCheckpoint(prefix).names()[0]
    dim = field(2, field(1, 1 << 20))  # float32 [2**20, 2**20]: 4 TiB
    huge = field(1, 1) + field(2, dim + dim) + field(4, 0) + field(5, 1 << 42)
    rewrite_entries(prefix, lambda name, value: huge if name == victim else value)
    assert_error(f'is truncated: .* needs {1 << 42:,}', data_file(prefix), TFCheckpoint, prefix)
    rewrite_entries(prefix, lambda name, value: value + field(5, 3) if name == victim else value)
    assert_error(re.escape(f'{victim!r} is float32 [1048576, 1048576] but is said to take 3 bytes'),
                 prefix + '.index', TFCheckpoint, prefix)
    minus_one = field(2, field(2, field(1, (1 << 64) - 1)))  # int64 -1 (an unknown dimension)
    rewrite_entries(prefix, lambda name, value: value + minus_one if name == victim else value)
    assert_error('negative dimension', prefix + '.index', TFCheckpoint, prefix)


def test_empty_tensor_reads_as_empty_array(prefix, tmp_path):
    prefix = copy_checkpoint(prefix, tmp_path)
    victim = TFCheckpoint(prefix).names()[0]
    empty = field(1, 1) + field(2, field(2, field(1, 0)) + field(2, field(1, 5))) + field(4, 0) + field(5, 0)
    rewrite_entries(prefix, lambda name, value: empty if name == victim else value)
    array = TFCheckpoint(prefix).get(victim)
    assert array.shape == (0, 5) and array.dtype == np.float32


def test_big_endian_writers_are_read_with_swapped_bytes(prefix, tmp_path, ckpt):
    prefix = copy_checkpoint(prefix, tmp_path)
    name = next(n for n in ckpt.names() if ckpt.entry(n).dtype == 'float32' and ckpt.entry(n).size)
    items = tf_checkpoint._read_table(Path(prefix + '.index').read_bytes())
    write_table(prefix + '.index', [(b'', items[0][1] + field(2, 1))] + items[1:])  # endianness = BIG
    swapped = TFCheckpoint(prefix).get(name)
    assert swapped.dtype == np.dtype('>f4') and swapped.tobytes() == ckpt.get(name).tobytes()


def test_unknown_name_suggests_close_names(ckpt):
    name = ckpt.names()[0]
    with pytest.raises(KeyError, match=f'is not in .*close names: {name}'):
        ckpt.entry(name + 'x')


def test_missing_crc32c_package_says_how_to_install_it(prefix, monkeypatch):
    monkeypatch.setitem(sys.modules, 'crc32c', None)  # import crc32c now raises ImportError
    with pytest.raises(TFCheckpointError, match='needs the crc32c package: pip install crc32c'):
        TFCheckpoint(prefix)
