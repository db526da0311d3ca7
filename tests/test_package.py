"""The package's shape (issue 15): small modules, and zoo rows as short deltas that
load their family base directly."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_over_500_lines():
  long = {str(p.relative_to(ROOT)): n for p in (ROOT / 'detx').rglob('*.py')
          if (n := len(p.read_text().splitlines())) > 500}
  assert not long, f'split these by job: {long}'


def test_zoo_rows_are_short_deltas_over_their_family_base():
  rows = [p for p in (ROOT / 'configs').glob('*.py') if p.stem != 'quickstart']
  assert len(rows) >= 30
  for p in rows:
    text = p.read_text()
    assert len(text.splitlines()) <= 15, p.name
    assert re.search(r"base\.load\('_base/\w+'", text), f'{p.name} must load configs/_base/'
    assert 'python -m detx.main --config=configs/' + p.name in text, p.name
    assert 'Expected' in text, p.name
