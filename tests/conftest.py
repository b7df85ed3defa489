"""Shared helpers and fixtures: tiny configurations that run in seconds on 2 CPU cores.

Tests marked ``slow`` (process launches, the notebook, the full demo) run only with ``-m slow``;
.ci/run runs both sets.
"""
import functools
import json
import logging
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import paddle
import pytest

from main import parse_args


paddle.set_device('cpu')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')

# The smallest configuration the discriminators accept: 96 px (global D), ch 4.
TINY = ['--light', 'True', '--ch', '4', '--n_res', '1', '--img_size', '96', '--device', 'cpu',
        '--num_workers', '0', '--seed', '0']


def tiny_argv(result_dir, data_root, *extra: str, dataset: str = 'tiny') -> list[str]:
    """main.py flags of a tiny model on ``data_root``/``dataset`` writing into ``result_dir``."""
    return TINY + ['--dataset', dataset, '--data_root', str(data_root), '--result_dir', str(result_dir), *extra]


def tiny_args(tmp_path, *extra: str, dataset: str = 'tiny', data_root=None):
    """Parsed arguments of a tiny model writing under tmp_path."""
    return parse_args(tiny_argv(tmp_path / 'results', data_root or tmp_path / 'data', *extra, dataset=dataset))


def build(tmp_path, *extra: str):
    """A tiny UGATIT with its model built (no data needed)."""
    from UGATIT import UGATIT
    gan = UGATIT(tiny_args(tmp_path, *extra))
    gan.build_model()
    return gan


def cli(tmp_path, data_root, *extra: str) -> str:
    """Run main.py's command line on the tiny model; returns the run folder <result_dir>/tiny."""
    import main
    main.main(tiny_argv(tmp_path / 'results', data_root, *extra))
    return tmp_path / 'results' / 'tiny'


def one_line_error(excinfo) -> str:
    """The message of a ``SystemExit`` from main.main, checked to be one ``error: …`` line."""
    message = str(excinfo.value.code)
    assert message.startswith('error: ') and '\n' not in message, message
    return message


def batch(seed: int, n: int = 1, size: int = 96) -> paddle.Tensor:
    return paddle.to_tensor(np.random.RandomState(seed).uniform(-1, 1, (n, 3, size, size)).astype('float32'))


def snapshot(gan) -> dict:
    """Every parameter and buffer of the six networks, as numpy copies keyed '<net>.<name>'."""
    return {f'{name}.{k}': v.numpy().copy() for name, net in gan.networks().items() for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------- #
# The parity fixtures recorded from the official PyTorch code (tests/fixtures/make_parity_fixtures.py)
# --------------------------------------------------------------------------- #
OUTPUTS = ('out', 'cam_logit', 'heatmap')


@functools.lru_cache(maxsize=None)
def parity_fixture(config: str) -> dict:
    with np.load(os.path.join(FIXTURES, f'parity_{config}.npz'), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays['meta'] = json.loads(str(arrays['meta']))
    return arrays


def group(fx: dict, prefix: str) -> dict:
    """{name: float32 array} of the arrays under ``prefix/`` (float16 ones are exact values)."""
    prefix += '/'
    return {k[len(prefix):]: v.astype(np.float32) for k, v in fx.items() if k.startswith(prefix)}


def to_input(images: np.ndarray) -> paddle.Tensor:
    """The fixture script's formula: uint8 pixels / 127.5 − 1, in float32."""
    return paddle.to_tensor(images.astype(np.float32) / np.float32(127.5) - np.float32(1.0))


def rel_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours − ref| / max |ref|."""
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


# --------------------------------------------------------------------------- #
# TF checkpoints written by the authors' code (tests/fixtures/make_tf_fixtures.py), and ways to damage copies
# --------------------------------------------------------------------------- #
def tf_prefix(config: str, step: int) -> str:
    """The prefix of tests/fixtures/tf/<config>'s model-<step> (config light, full or light_test_phase)."""
    (index,) = Path(FIXTURES, 'tf', config, 'checkpoint').glob(f'*/*.model-{step}.index')
    return str(index)[:-len('.index')]


def copy_checkpoint(prefix: str, tmp_path: Path) -> str:
    """Copies the fixture's folder to tmp_path/checkpoint/<model_dir>/ and returns the copy's prefix."""
    folder = Path(prefix).parent
    shutil.copytree(folder, tmp_path / 'checkpoint' / folder.name)
    return str(tmp_path / 'checkpoint' / folder.name / Path(prefix).name)


def data_file(prefix: str) -> str:
    (path,) = Path(prefix).parent.glob(Path(prefix).name + '.data-*')
    return str(path)


# A minimal writer of LevelDB tables (tensorflow/core/lib/io/table_builder.cc), to store edited index entries.
def varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7f | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def masked_crc(data: bytes) -> int:
    import crc32c
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xa282ead8) & 0xffffffff


def write_table(path: str, items: list[tuple[bytes, bytes]]) -> None:
    """One data block (every entry a restart point), an empty metaindex block, an index block, the footer."""
    out = bytearray()

    def put_block(entries: list[tuple[bytes, bytes]]) -> bytes:
        body, restarts = bytearray(), []
        for key, value in entries:
            restarts.append(len(body))
            body += varint(0) + varint(len(key)) + varint(len(value)) + key + value
        body += struct.pack(f'<{len(restarts)}I', *restarts) + struct.pack('<I', len(restarts))
        handle = varint(len(out)) + varint(len(body))
        out.extend(body + b'\0' + struct.pack('<I', masked_crc(bytes(body) + b'\0')))
        return handle

    data = put_block(items)
    footer = put_block([]) + put_block([(items[-1][0] + b'\xff', data)])
    out += footer.ljust(40, b'\0') + struct.pack('<Q', 0xdb4775248b80fb57)
    Path(path).write_bytes(out)


def rewrite_entries(prefix: str, edit, keep=lambda name: True) -> None:
    """Rewrites prefix.index with edit(key, value) -> value applied to every entry but the header,
    keeping the entries whose name ``keep`` accepts."""
    from extras import tf_checkpoint
    items = tf_checkpoint._read_table(Path(prefix + '.index').read_bytes())
    write_table(prefix + '.index', items[:1] + [(k, edit(k.decode(), v)) for k, v in items[1:] if keep(k.decode())])



@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """A 6+6 train / 3+3 test demo dataset at 48 px (its data_root; the dataset is 'tiny')."""
    from extras.demo_data import build_demo_dataset
    root = tmp_path_factory.mktemp('data')
    build_demo_dataset(str(root), name='tiny', size=48, n_train=6, n_test=3, seed=1)
    return root


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: launches processes or runs the notebook or full demo (pytest -m slow)')


# CI installs every optional test dependency (FID weights, paddle2onnx, onnxruntime, nbclient, the browser)
# and sets this: a test that would skip for a missing one fails instead, so CI cannot pass by skipping.
REQUIRE_ALL = os.environ.get('UGATIT_REQUIRE_ALL') == '1'


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if REQUIRE_ALL and report.skipped and not hasattr(report, 'wasxfail'):
        report.outcome = 'failed'
        report.longrepr = f'skipped, but UGATIT_REQUIRE_ALL=1 requires every test to run: {report.longrepr}'


@pytest.fixture(autouse=True)
def _quiet_logging(caplog):
    caplog.set_level(logging.INFO, logger='ugatit')
