"""bench.py on the tiniest settings: JSON lines that parse and carry their fields, one-line errors.

No test asserts a time: benchmarks report numbers.
"""
import json
import os
import subprocess
import sys

import pytest

import bench

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--light', 'True', '--img_size', '96', '--ch', '4', '--n_res', '1', '--steps', '2', '--warmup', '1',
        '--device', 'cpu', '--threads', '1']
MEASUREMENT_FIELDS = {'what', 'impl', 'light', 'img_size', 'ch', 'n_res', 'batch_size', 'amp', 'device', 'threads',
                      'median_s', 'min_s', 'max_s', 'images_per_s', 'seconds_per_image', 'peak_rss_mb',
                      'loadavg_start', 'loadavg_end', 'other_cpu_cores', 'steps', 'warmup', 'paddle', 'source'}


def run_bench(cwd, *argv, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'bench.py')] + TINY + list(argv), cwd=str(cwd),
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.startswith('{')]


def shadow_torch(tmp_path, body):
    """Environment in which `import torch` runs ``body`` instead of the real package (if any)."""
    package = tmp_path / 'shadow' / 'torch'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text(body)
    return {'PYTHONPATH': os.pathsep.join(p for p in (str(tmp_path / 'shadow'), os.environ.get('PYTHONPATH')) if p)}


def test_train_and_test_give_one_json_line_each_and_a_table(tmp_path):
    out = tmp_path / 'bench.jsonl'
    run = run_bench(tmp_path, '--what', 'train,test', '--out', str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    records = json_lines(out.read_text())
    assert [(r['what'], r['impl']) for r in records] == [('train', 'ours'), ('test', 'ours')]
    for r in records:
        assert MEASUREMENT_FIELDS <= set(r), MEASUREMENT_FIELDS - set(r)
        assert (r['light'], r['img_size'], r['ch'], r['n_res'], r['batch_size'], r['amp'], r['device']) == \
            (True, 96, 4, 1, 1, 'off', 'cpu')
        assert r['steps_timed'] == 2 and r['threads'] == 1
        assert 0 < r['min_s'] <= r['median_s'] <= r['max_s']
        assert r['images_per_s'] > 0 and r['peak_rss_mb'] > 0
    test = records[1]
    assert test['test_batch'] == 8                              # ch 4 × 96 px: test() batches 8 images
    assert test['images_per_s'] == pytest.approx(test['test_batch'] / test['median_s'], rel=1e-2)
    assert not json_lines(run.stdout)                           # --out takes the JSON lines
    assert 'median ms' in run.stdout and run.stdout.count('light') == 2     # the table, one row each


def test_nproc_reports_global_throughput_and_scaling(tmp_path):
    run = run_bench(tmp_path, '--what', 'train', '--steps', '1', '--warmup', '1', '--nproc', '1,2')
    assert run.returncode == 0, run.stderr[-3000:]
    records = json_lines(run.stdout)
    measured = [r for r in records if r['what'] == 'train']
    assert [(r['nproc'], r['world_size'], r['global_batch']) for r in measured] == [(1, 1, 1), (2, 2, 2)]
    for r in measured:
        assert MEASUREMENT_FIELDS <= set(r), MEASUREMENT_FIELDS - set(r)
        assert r['peak_rss_mb_all_ranks'] >= r['peak_rss_mb'] > 0
    # The scaling lines are computed from the measurements above (one run each: the medians are them).
    scaling = {r['nproc']: r for r in records if r['what'] == 'scaling'}
    assert sorted(scaling) == [1, 2]
    for r in measured:
        assert scaling[r['nproc']]['images_per_s'] == pytest.approx(r['images_per_s'], abs=1e-3)
    speedup = measured[1]['images_per_s'] / measured[0]['images_per_s']
    assert scaling[2]['speedup'] == pytest.approx(speedup, rel=1e-2)
    assert scaling[2]['efficiency'] == pytest.approx(speedup / 2, rel=1e-2)


def test_reference_without_torch_says_so_in_one_line_and_measures_ours(tmp_path):
    env = shadow_torch(tmp_path, "raise ImportError('No module named torch (hidden by the test)')\n")
    run = run_bench(tmp_path, '--what', 'train', '--steps', '1', '--warmup', '0', '--reference', str(tmp_path),
                    env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    notices = [line for line in run.stderr.splitlines() if '--reference' in line]
    assert len(notices) == 1, run.stderr
    assert 'PyTorch' in notices[0] and 'measuring ours only' in notices[0] and 'pip install torch' in notices[0]
    assert 'Traceback' not in run.stderr
    assert [(r['what'], r['impl']) for r in json_lines(run.stdout)] == [('train', 'ours')]


@pytest.mark.parametrize('folder, message', [
    ('missing', 'no networks.py or UGATIT.py there'),
    ('other_code', 'is not the official file of commit b8c4251'),
])
def test_reference_to_a_wrong_folder_is_a_one_line_error(tmp_path, folder, message):
    env = shadow_torch(tmp_path, "__version__ = '0.0+shadow'\n")      # torch "imports": DIR is checked
    (tmp_path / 'other_code').mkdir()
    for name in ('networks.py', 'UGATIT.py'):
        (tmp_path / 'other_code' / name).write_text('# not the official code\n')
    run = run_bench(tmp_path, '--reference', str(tmp_path / folder), env=env)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: --reference') and message in lines[0], run.stderr
    assert not json_lines(run.stdout)


@pytest.mark.parametrize('argv, message', [
    (['--steps', '0'], '--steps must be at least 1'),
    (['--amp', 'fp8'], 'expected one of off, bf16, fp16'),
    (['--what', 'train,speed'], 'expected some of train,test,inception'),
    (['--reference', 'x', '--nproc', '1,2'], 'run them separately'),
    (['--nproc', '2', '--what', 'test'], 'add train to --what'),
])
def test_bad_arguments_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_bench_args(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_lists_make_every_combination():
    args = bench.parse_bench_args(['--light', 'True,False', '--img_size', '128,256', '--amp', 'off,bf16'])
    configs = bench.configurations(args)
    assert len(configs) == 8 and len({tuple(c.values()) for c in configs}) == 8


def test_table_shows_measurements_failures_comparisons_and_scaling():
    config = dict(light=True, img_size=128, ch=16, n_res=4, batch_size=1, amp='off')
    timing = dict(median_s=0.5, min_s=0.4, max_s=0.6, images_per_s=2.0, peak_rss_mb=900.0, other_cpu_cores=0.1,
                  loadavg_end='1.00 1.00 1.00', threads=1)
    records = [dict(what='train', impl='ours', **config, **timing),
               dict(what='train', impl='official', **config, error='killed by signal 9 (out of memory?)'),
               dict(what='test', impl='ours', **dict(timing, other_cpu_cores=0.9), **config),
               dict(what='compare', of='train', **config, ratios_ours_over_official=[0.8, 0.9], median_ratio=0.85),
               dict(what='scaling', nproc=2, **config, images_per_s=3.0, speedup=1.5, efficiency=0.75)]
    table = bench.format_table(records)
    assert '500.0' in table and 'killed by signal 9' in table
    assert 'median 0.850' in table and 'efficiency 75 %' in table
    assert table.count('others busy') == 1 and '1 measurement(s) ran while other processes used' in table
