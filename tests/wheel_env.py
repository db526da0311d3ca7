"""A wheel built from this checkout, installed in a fresh virtualenv (session fixture
`installed_wheel`, shared by tests/test_packaging.py and tests/experiments/test_notebook.py).

The wheel is built from a copy of what it ships (pyproject.toml, README.md, LICENSE,
NOTICE, detx/, configs/: setuptools' build/ directory in the clone could hold stale
modules) with `pip wheel --no-deps --no-build-isolation`. The virtualenv has no
packages of its own: a .pth file puts the test environment's site-packages after its
own (the dependencies, pip, ipykernel; a path a .pth file adds does not run that
directory's .pth files, so the clone's editable install stays out), and
`pip install --no-deps --ignore-installed` puts the wheel in it.
"""
import dataclasses
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ('pyproject.toml', 'README.md', 'LICENSE', 'NOTICE', 'detx', 'configs')


@dataclasses.dataclass(frozen=True)
class WheelEnv:
  wheel: Path    # the built .whl
  python: Path   # the virtualenv's interpreter
  prefix: Path   # the virtualenv
  pip: tuple     # the command that runs pip for this virtualenv

  def env(self) -> dict:
    """os.environ for a subprocess of the virtualenv: its bin/ first, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PYTHONHOME')}
    env['PATH'] = f'{self.prefix / "bin"}{os.pathsep}{env.get("PATH", "")}'
    env['VIRTUAL_ENV'] = str(self.prefix)
    return env


def build_wheel(out: Path) -> Path:
  src = out / 'src'
  src.mkdir(parents=True)
  ignore = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
  for name in SHIPPED:
    if (ROOT / name).is_dir():
      shutil.copytree(ROOT / name, src / name, ignore=ignore)
    else:
      shutil.copy2(ROOT / name, src / name)
  r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps',
                      '--no-build-isolation', '-w', str(out / 'dist'), str(src)],
                     capture_output=True, text=True)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  wheels = list((out / 'dist').glob('detx-*.whl'))
  assert len(wheels) == 1, wheels
  return wheels[0]


def make_venv(prefix: Path) -> Path:
  venv.EnvBuilder(with_pip=False, symlinks=True).create(prefix)
  python = prefix / 'bin' / 'python'
  site = Path(subprocess.run([str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
                             capture_output=True, text=True, check=True).stdout.strip())
  ours = dict.fromkeys([sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']])
  (site / 'zz_detx_test_environment.pth').write_text('\n'.join(ours) + '\n')
  return python


def install(wheel: Path, prefix: Path) -> WheelEnv:
  python = make_venv(prefix)
  pip = (str(python), '-m', 'pip')
  env = WheelEnv(wheel, python, prefix, pip)
  r = subprocess.run([*pip, 'install', '-q', '--no-deps', '--ignore-installed', str(wheel)],
                     capture_output=True, text=True, env=env.env())
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
  return env


@pytest.fixture(scope='session')
def installed_wheel(tmp_path_factory) -> WheelEnv:
  tmp = tmp_path_factory.mktemp('wheel')
  return install(build_wheel(tmp), tmp / 'venv')
