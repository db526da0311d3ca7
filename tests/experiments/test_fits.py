"""experiments/fits.py overfit: a run of some fit tests replaces those tests' rows in the
record and keeps the other tests' rows with the commit each ran at (pytest itself is
replaced by a stand-in that writes what the fit_record hook would)."""
import argparse
import json
import subprocess

from experiments import fits


def _rec(commit, values):
  return {'command': 'c', 'commit': commit, 'machine': {}, 'date': f'd-{commit}',
          'values': values}


def test_a_subset_run_replaces_its_rows_and_keeps_the_others(tmp_path, monkeypatch):
  out = tmp_path / 'overfit_cpu.json'
  out.write_text(json.dumps(_rec('old1', {'t::a': [{'steps': 1}], 't::b': [{'steps': 2}]})))

  def fake_pytest(cmd, cwd, env):
    assert '-k' in cmd and cmd[-1] == 'b'
    path = env['DETX_FIT_RECORD']
    assert path != str(out)  # the tests write a fresh file, merged afterwards
    with open(path, 'w') as f:
      json.dump(_rec('new2', {'t::b': [{'steps': 3}], 't::c': [{'steps': 4}]}), f)
    return subprocess.CompletedProcess(cmd, 0)

  monkeypatch.setattr(fits.subprocess, 'run', fake_pytest)
  assert fits.overfit(argparse.Namespace(out=str(out)), ['-k', 'b']) == 0
  rec = json.loads(out.read_text())
  assert rec['commit'] == 'new2'
  assert rec['values'] == {
      't::a': [{'commit': 'old1', 'date': 'd-old1', 'steps': 1}],
      't::b': [{'commit': 'new2', 'date': 'd-new2', 'steps': 3}],
      't::c': [{'commit': 'new2', 'date': 'd-new2', 'steps': 4}]}
  assert not list(tmp_path.glob('*.run'))
