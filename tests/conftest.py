"""Shared fixtures: tiny configurations that run in seconds on 2 CPU cores."""
import logging
import os

import paddle
import pytest

from main import parse_args

paddle.set_device('cpu')

# The smallest configuration the discriminators accept: 96 px (global D), ch 4.
TINY = ['--light', 'True', '--ch', '4', '--n_res', '1', '--img_size', '96', '--device', 'cpu',
        '--num_workers', '0', '--seed', '0']


def tiny_argv(result_dir, data_root, *extra: str, dataset: str = 'tiny') -> list[str]:
    """main.py flags of a tiny model on ``data_root``/``dataset`` writing into ``result_dir``."""
    return TINY + ['--dataset', dataset, '--data_root', str(data_root), '--result_dir', str(result_dir), *extra]


def tiny_args(tmp_path, *extra: str, dataset: str = 'tiny', data_root=None):
    """Parsed arguments of a tiny model writing under tmp_path."""
    return parse_args(tiny_argv(tmp_path / 'results', data_root or tmp_path / 'data', *extra, dataset=dataset))


@pytest.fixture(scope='session')
def tiny_data(tmp_path_factory):
    """A 6+6 train / 3+3 test demo dataset at 48 px (data_root, name)."""
    from demo_data import build_demo_dataset
    root = tmp_path_factory.mktemp('data')
    build_demo_dataset(str(root), name='tiny', size=48, n_train=6, n_test=3, seed=1)
    return root


# CI installs every optional test dependency (FID weights, paddle2onnx, onnxruntime, nbclient) and
# sets this: a test that would skip for a missing one fails instead, so CI cannot pass by skipping.
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
