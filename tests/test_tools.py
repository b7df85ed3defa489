"""tools/: the benchmark and the oneDNN gradient check run and report what they measure."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

TOOLS = os.path.join(ROOT, 'tools')


def run_tool(name: str, *argv: str) -> str:
    run = subprocess.run([sys.executable, os.path.join(TOOLS, name), *argv], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.slow
def test_bench_times_our_whole_training_loop():
    out = run_tool('bench.py', '--img_size', '96', '--ch', '4', '--steps', '2', '--warmup', '1', '--repeats', '1')
    header, record = out.splitlines()[0], json.loads(out.splitlines()[1])
    assert header.startswith('# ') and 'cores' in header                        # which CPU the numbers are from
    assert record['impl'] == 'ours' and 'error' not in record and 0 < record['min_s'] <= record['median_s']
    assert record['peak_rss_gb'] > 0 and f'{record["median_s"]:.3f}' in out      # the table shows the record


@pytest.mark.slow
def test_onednn_gradient_check_runs_a_case_in_its_own_process():
    out = run_tool('onednn_grads.py', '--case', 'conv2d')
    assert out.startswith('# Paddle ') and out.splitlines()[1].split()[:2] == ['conv2d', 'ok']


def test_onednn_gradient_check_verdicts(monkeypatch):
    monkeypatch.syspath_prepend(TOOLS)
    from onednn_grads import verdict
    assert verdict({'errors': [1e-7, 2.0]}) == 'WRONG (relative error 2)'
    assert verdict({'crash': 'exit status -11'}).startswith('CRASH')
