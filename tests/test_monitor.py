"""Progress reporting: VisualDL scalars and images at the right steps, a bar only on a terminal."""
import io
import os
import sys

import numpy as np

import main
from extras import monitor
from conftest import tiny_argv


def read_visualdl(folder):
    from visualdl import LogReader
    files = [f for f in os.listdir(folder) if f.startswith('vdlrecords')]
    assert len(files) == 1, files
    return LogReader(file_path=os.path.join(folder, files[0]))


def test_visualdl_gets_losses_lrs_rho_and_grids_at_their_steps(tmp_path, tiny_data):
    main.main(tiny_argv(tmp_path, tiny_data, '--iteration', '4', '--print_freq', '2'))
    reader = read_visualdl(tmp_path / 'tiny' / 'vdl')
    tags = reader.get_tags()
    scalars = set(tags['scalar'])
    assert {'loss/D_loss', 'loss/G_loss', 'loss/G_cam_loss_A', 'loss/D_ad_cam_loss_LB', 'loss/G_recon_loss_B',
            'lr', 'speed/it_per_s'} <= scalars
    # ρ statistics of every AdaLIN/LIN layer: 1 res block × 2 AdaLIN + 2 LIN per generator, 3 stats each
    rho = {t for t in scalars if t.startswith('rho/')}
    assert len(rho) == 2 * 4 * 3 and 'rho/genB2A.UpBlock2.3/max' in rho
    steps = [record.id for record in reader.get_data('scalar', 'loss/G_loss')]
    assert steps == [1, 2, 3, 4]                                   # one point per step: the counter advances
    lrs = [record.value for record in reader.get_data('scalar', 'lr')]
    np.testing.assert_allclose(lrs, [1e-4, 1e-4, 5e-5, 0.0], atol=1e-9)   # linear decay over the second half
    rho_means = [r.value for r in reader.get_data('scalar', 'rho/genA2B.UpBlock1_1.norm1/mean')]
    assert all(0.8 < v <= 1.0 for v in rho_means)
    assert set(tags['image']) == {'grid/A2B', 'grid/B2A'}
    assert [record.id for record in reader.get_data('image', 'grid/A2B')] == [2, 4]


def test_progress_bar_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr(sys, 'stderr', io.StringIO())
    assert monitor.progress_bar(10) is None
    monkeypatch.setattr(sys.stderr, 'isatty', lambda: True)
    bar = monitor.progress_bar(10, desc='train')
    assert bar is not None and bar.total == 10
    bar.close()
    assert monitor.progress_bar(10, enabled=False) is None


def test_log_lines_without_a_terminal(tmp_path, tiny_data, caplog):
    main.main(tiny_argv(tmp_path, tiny_data, '--iteration', '3', '--print_freq', '20'))
    lines = [r.getMessage() for r in caplog.records if 'it/s' in r.getMessage()]
    assert len(lines) == 2 and lines[0].startswith('[      2/      3]') and 'd_loss' in lines[0]
