"""experiments/colab_quickstart.ipynb runs headless (nbclient) on a tiny model.

The notebook's parameters cell reads DETX_NOTEBOOK_STEPS / DETX_NOTEBOOK_OVERRIDES /
DETX_NOTEBOOK_WORKDIR from the environment, which the kernel inherits from this process.
"""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / 'experiments' / 'colab_quickstart.ipynb'


def test_notebook_is_valid_and_parameterised():
  nbformat = pytest.importorskip('nbformat')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(not c.outputs and c.execution_count is None for c in code), 'commit it without outputs'
  params = [c for c in code if 'parameters' in c.metadata.get('tags', [])]
  assert len(params) == 1
  for name in ('STEPS', 'DETX_NOTEBOOK_STEPS', 'DETX_NOTEBOOK_OVERRIDES', 'DETX_NOTEBOOK_WORKDIR'):
    assert name in params[0].source
  sources = '\n'.join(c.source for c in code)
  assert '%pip install -q -e' in sources and '# %pip install -q "git+' in sources
  assert "IMAGE = ''" in sources and 'predict.run(' in sources


@pytest.mark.slow
def test_notebook_runs_headless(tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  from detx.data import synthetic
  data = synthetic.generate(tmp_path / 'shapes', num_train=24, num_val=8, image_size=64, seed=0)
  workdir = tmp_path / 'run'
  overrides = {
      'model.backbone.depths': (1, 1, 1, 1, 1), 'model.backbone.width': 0.125, 'data.train_sizes': (64,),
      'eval.size': 64, 'eval.batch_size': 4, 'train.batch_size': 4, 'data.max_boxes': 8,
      'train.log_every': 1, 'train.checkpoint_every': 3,
      'data.dir': str(data), 'data.cache_dir': str(tmp_path / 'tfds')}
  monkeypatch.setenv('DETX_NOTEBOOK_STEPS', '3')
  monkeypatch.setenv('DETX_NOTEBOOK_OVERRIDES', repr(overrides))
  monkeypatch.setenv('DETX_NOTEBOOK_WORKDIR', str(workdir))
  monkeypatch.delenv('DETX_NOTEBOOK_IMAGE', raising=False)
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name='python3',
                                   resources={'metadata': {'path': str(NOTEBOOK.parent)}})
  client.execute()  # raises CellExecutionError naming the failing cell

  errors = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if o.output_type == 'error']
  assert not errors
  text = '\n'.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code'
                   for o in c.outputs if o.output_type == 'stream')
  assert 'STEPS=3' in text and 'steps 3, batch 4' in text, text[-3000:]
  images = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs
            if o.output_type == 'display_data' and ('image/png' in o.data or 'image/jpeg' in o.data)]
  assert len(images) >= 4, [c.outputs for c in nb.cells if c.cell_type == 'code']  # data, loss, val, own image

  from detx import metrics
  rows = metrics.read_metrics(workdir)
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2, 3]
  assert any('bbox/AP50' in r for r in rows)
  assert (workdir / 'loss.png').stat().st_size > 1000
  assert (workdir / 'predictions_val.png').stat().st_size > 1000
  val = sorted(p.name for p in (workdir / 'predictions_val').iterdir())
  assert val == sorted([f.stem + '.jpg' for f in sorted((data / 'val2017').iterdir())[:4]]
                       + ['detections.json'])
  own = sorted(p.name for p in (workdir / 'predictions_image').iterdir())
  assert own == sorted(['detections.json', f'{1_000_001:012d}.jpg']), own
