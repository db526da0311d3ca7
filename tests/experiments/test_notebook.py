"""experiments/colab_quickstart.ipynb: its install line and Open-in-Colab link come from
pyproject's [project.urls]; run headless (nbclient) in a kernel of the virtualenv that
tests/wheel_env.py makes, it installs a wheel of the repository, takes its GPU branch
(nvidia-smi and the CUDA jax install mocked), trains a tiny quickstart, plots the loss,
prints the --mode=eval report and draws predictions.

The notebook's parameters cell reads DETX_NOTEBOOK_* from the environment, which the
kernel inherits from this process.
"""
import json
import os
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / 'experiments' / 'colab_quickstart.ipynb'


def _urls() -> dict:
  return tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['urls']


def test_notebook_is_valid_and_parameterised():
  nbformat = pytest.importorskip('nbformat')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == 'code']
  assert all(not c.outputs and c.execution_count is None for c in code), 'commit it without outputs'
  params = [c for c in code if 'parameters' in c.metadata.get('tags', [])]
  assert len(params) == 1
  for name in ('PIP_SPEC', 'DETX_NOTEBOOK_PIP_SPEC', 'DETX_NOTEBOOK_PIP', 'STEPS',
               'DETX_NOTEBOOK_STEPS', 'DETX_NOTEBOOK_OVERRIDES', 'DETX_NOTEBOOK_WORKDIR'):
    assert name in params[0].source
  repo = _urls()['Repository'].rstrip('/')
  assert f"PIP_SPEC = 'git+{repo}.git'" in params[0].source
  owner_name = repo.removeprefix('https://github.com/')
  colab = (f'https://colab.research.google.com/github/{owner_name}/blob/main/'
           f'{NOTEBOOK.relative_to(ROOT).as_posix()}')
  assert _urls()['Colab quickstart'] == colab
  assert f'[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab})' in (
      nb.cells[0].source)
  sources = '\n'.join(c.source for c in code)
  assert "jax[cuda12]=={JAX_VERSION}" in sources and "'--mode=eval'" in sources
  assert "IMAGE = ''" in sources and 'predict.run(' in sources and '<owner>' not in sources


def _kernel(tmp_path, python) -> str:
  """A kernelspec (on JUPYTER_PATH) whose kernel is `python`."""
  spec = tmp_path / 'jupyter' / 'kernels' / 'detx-wheel'
  spec.mkdir(parents=True)
  (spec / 'kernel.json').write_text(json.dumps({
      'argv': [str(python), '-m', 'ipykernel_launcher', '-f', '{connection_file}'],
      'display_name': 'detx wheel', 'language': 'python'}))
  return str(tmp_path / 'jupyter')


@pytest.mark.slow
def test_notebook_runs_headless_against_the_wheel(installed_wheel, shapes_dir, tmp_path, monkeypatch):
  nbformat = pytest.importorskip('nbformat')
  nbclient = pytest.importorskip('nbclient')
  import importlib.metadata
  # The mocks: a GPU that nvidia-smi lists, and pip, which passes every install to the
  # virtualenv's pip but records, and skips, the CUDA jax.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  pip_log = tmp_path / 'pip.log'
  (bin_dir / 'nvidia-smi').write_text(
      '#!/bin/sh\necho "GPU 0: Tesla T4 (UUID: GPU-00000000-0000-0000-0000-000000000000)"\n')
  (bin_dir / 'pip').write_text(
      f'#!/bin/sh\necho "$*" >> {pip_log}\n'
      'case "$*" in *"jax[cuda12]"*) echo "(test: the CUDA build is not installed)"; exit 0;; esac\n'
      f'exec {" ".join(installed_wheel.pip)} "$@"\n')
  for f in bin_dir.iterdir():
    f.chmod(0o755)
  for key, value in installed_wheel.env().items():
    monkeypatch.setenv(key, value)
  monkeypatch.setenv('PATH', f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')
  monkeypatch.setenv('JUPYTER_PATH', _kernel(tmp_path, installed_wheel.python))

  workdir = tmp_path / 'run'
  overrides = {
      'model.backbone.depths': (1, 1, 1, 1, 1), 'model.backbone.width': 0.125, 'data.train_sizes': (64,),
      'eval.size': 64, 'eval.batch_size': 4, 'train.batch_size': 4, 'data.max_boxes': 8,
      'train.log_every': 1, 'train.checkpoint_every': 3, 'eval.limit': 4,
      'data.dir': str(shapes_dir), 'data.cache_dir': str(tmp_path / 'tfds')}
  monkeypatch.setenv('DETX_NOTEBOOK_PIP_SPEC', f'--no-deps --ignore-installed {installed_wheel.wheel}')
  monkeypatch.setenv('DETX_NOTEBOOK_PIP', str(bin_dir / 'pip'))
  monkeypatch.setenv('DETX_NOTEBOOK_STEPS', '3')
  monkeypatch.setenv('DETX_NOTEBOOK_OVERRIDES', repr(overrides))
  monkeypatch.setenv('DETX_NOTEBOOK_WORKDIR', str(workdir))
  monkeypatch.delenv('DETX_NOTEBOOK_IMAGE', raising=False)
  monkeypatch.setenv('MPLBACKEND', 'module://matplotlib_inline.backend_inline')
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name='detx-wheel',
                                   resources={'metadata': {'path': str(tmp_path)}})
  client.execute()  # raises CellExecutionError naming the failing cell
  nbformat.write(nb, tmp_path / 'executed.ipynb')  # to read what a user would see

  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  text = '\n'.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
  assert 'STEPS=3' in text and 'steps 3, batch 4' in text, text[-3000:]
  site = installed_wheel.prefix / 'lib' / f'python{sys.version_info.major}.{sys.version_info.minor}' / 'site-packages'
  assert f'detx 0.1.0 from {site / "detx"}' in text, text[-3000:]
  installs = pip_log.read_text().splitlines()
  jax_version = importlib.metadata.version('jax')
  assert installs == [f'install -q --no-deps --ignore-installed {installed_wheel.wheel}',
                      f'install -q jax[cuda12]=={jax_version}'], installs
  assert 'GPU runtime: GPU 0: Tesla T4' in text
  assert '--mode=eval' in text and 'step 3: bbox AP ' in text, text[-3000:]
  images = [o for o in outputs if o.output_type == 'display_data'
            and ('image/png' in o.data or 'image/jpeg' in o.data)]
  assert len(images) >= 4, outputs  # data, loss, val, own image

  from detx import metrics
  rows = metrics.read_metrics(workdir)
  assert [r['step'] for r in rows if 'train/loss' in r] == [1, 2, 3]
  assert [r['step'] for r in rows if 'bbox/AP50' in r] == [3]  # the --mode=eval run
  assert (workdir / 'loss.png').stat().st_size > 1000
  assert (workdir / 'predictions_val.png').stat().st_size > 1000
  val = sorted(p.name for p in (workdir / 'predictions_val').iterdir())
  assert val == sorted([f.stem + '.jpg' for f in sorted((shapes_dir / 'val2017').iterdir())[:4]]
                       + ['detections.json'])
  own = sorted(p.name for p in (workdir / 'predictions_image').iterdir())
  assert own == sorted(['detections.json', f'{1_000_001:012d}.jpg']), own
