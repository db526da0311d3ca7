r"""A grid of training runs, each a `python -m detx.main` subprocess, and their summary.

  python experiments/sweep.py --config=configs/quickstart.py --workdir=/tmp/sweep \
      --grid='optim.base_lr=[0.01,0.02] train.batch_size=[8,16]' [--parallel=2] \
      [--set train.steps=300 --set data.dir=/data/shapes ...] [--dry-run]

--grid is whitespace-separated `key=[v1, v2, ...]` items; each list is a Python
literal (so `data.train_sizes=[(96,), (128,)]` and `model.dtype=['float32']` work),
and the sweep runs their cartesian product. --set key=value (repeatable) overrides
a key in every run (passed to detx.main as --config.key=value).

Each run trains in WORKDIR/<name>, the name built from its grid values
(`base_lr=0.01__batch_size=8`), and logs detx.main's output to WORKDIR/<name>/log.txt.
A crash in one run does not stop the others; --parallel runs N at a time (on one
accelerator, set XLA_PYTHON_CLIENT_MEM_FRACTION to share its memory; with N > 1 the
sweep turns off JAX's whole-memory preallocation unless XLA_PYTHON_CLIENT_PREALLOCATE
is set).

WORKDIR/summary.md and WORKDIR/summary.csv hold one row per run: its grid values,
status (pending / running / done / failed / incomplete), the last logged step and
train/loss, and the last evaluation's metrics (bbox/AP, bbox/AP50, ...). They are
rewritten whenever a run starts or ends.

Running the same command again skips the finished runs (latest checkpoint at
train.steps and an evaluation row at that step in metrics.jsonl) and resumes the
others from their checkpoints. Ctrl-C or SIGTERM stops the sweep: the runs in
progress get SIGTERM, checkpoint at their next step and show as incomplete.
Exits 0 when every run is done, 1 when one is not, 2 on a bad --grid / --set
(checked against the config before anything runs), 130 when stopped.
"""
import argparse
import ast
import csv
import hashlib
import io
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_KEY = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')
_OPEN, _CLOSE = '([{', ')]}'
EVAL_PREFIXES = ('bbox/', 'segm/', 'voc/')


class GridError(ValueError):
  """A --grid or --set that cannot be used; the message says which item and why."""


# ---------------------------------------------------------------- grid spec ---

def _split_items(spec: str) -> list[str]:
  """Splits on whitespace outside brackets and quotes."""
  items, cur, depth, quote, i = [], [], 0, None, 0
  while i < len(spec):
    ch = spec[i]
    if quote:
      cur.append(ch)
      if ch == '\\' and i + 1 < len(spec):
        cur.append(spec[i + 1])
        i += 1
      elif ch == quote:
        quote = None
    elif ch in '\'"':
      quote = ch
      cur.append(ch)
    elif ch in _OPEN:
      depth += 1
      cur.append(ch)
    elif ch in _CLOSE:
      depth -= 1
      if depth < 0:
        raise GridError(f'unbalanced {ch!r} at character {i + 1} of --grid {spec!r}')
      cur.append(ch)
    elif ch.isspace() and depth == 0:
      if cur:
        items.append(''.join(cur))
        cur = []
    else:
      cur.append(ch)
    i += 1
  if quote:
    raise GridError(f'unterminated {quote} quote in --grid {spec!r}')
  if depth:
    raise GridError(f'unbalanced brackets in --grid {spec!r}')
  if cur:
    items.append(''.join(cur))
  return items


def parse_grid(spec: str) -> dict[str, list]:
  """'optim.base_lr=[0.01,0.02] train.batch_size=[8,16]' ->
  {'optim.base_lr': [0.01, 0.02], 'train.batch_size': [8, 16]} (order kept)."""
  if not spec or not spec.strip():
    raise GridError("--grid is empty; expected items like 'optim.base_lr=[0.01,0.02]'")
  grid = {}
  for item in _split_items(spec):
    key, eq, text = item.partition('=')
    key = key.strip()
    if not eq:
      raise GridError(f'grid item {item!r} has no "=": expected key=[v1, v2, ...]')
    if not _KEY.fullmatch(key):
      raise GridError(f'grid item {item!r}: {key!r} is not a dotted config key like optim.base_lr')
    if key in grid:
      raise GridError(f'grid key {key!r} appears twice')
    try:
      values = ast.literal_eval(text.strip())
    except (SyntaxError, ValueError) as e:
      why = f'syntax error: {e.msg}' if isinstance(e, SyntaxError) else 'it names something that is not a literal'
      raise GridError(f'grid item {item!r}: {text.strip()!r} is not a Python literal list ({why}); '
                      f'strings need quotes, e.g. {key}=["a", "b"]') from None
    if not isinstance(values, list):
      raise GridError(f'grid item {item!r}: the values must be a list in [], e.g. '
                      f'{key}=[{text.strip()}, ...] (use --set {key}={text.strip()} for one fixed value)')
    if not values:
      raise GridError(f'grid item {item!r}: the list of values is empty')
    reprs = [repr(v) for v in values]
    if len(set(reprs)) != len(reprs):
      raise GridError(f'grid item {item!r}: a value is repeated')
    grid[key] = values
  return grid


def expand(grid: dict[str, list]) -> list[dict]:
  """The cartesian product, first key slowest: a list of {key: value}."""
  keys = list(grid)
  return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def _short_keys(keys) -> dict[str, str]:
  """Each key's last component, or more components where those collide."""
  out = {}
  for k in keys:
    parts = k.split('.')
    for n in range(1, len(parts) + 1):
      short = '.'.join(parts[-n:])
      if sum(1 for o in keys if o == short or o.endswith('.' + short)) == 1:
        break
    out[k] = short
  return out


def format_value(value) -> str:
  """How detx.main's --config.key= takes a value: strings raw, the rest as literals."""
  return value if isinstance(value, str) else repr(value)


def _safe(text: str) -> str:
  text = re.sub(r'[^A-Za-z0-9._+=-]+', '-', text).strip('-')
  return text or 'x'


def run_name(values: dict, short: dict | None = None) -> str:
  """{'optim.base_lr': 0.01, 'train.batch_size': 8} -> 'base_lr=0.01__batch_size=8'."""
  short = short or _short_keys(list(values))
  name = '__'.join(f'{short[k]}={_safe(format_value(v))}' for k, v in values.items())
  name = name.lstrip('.')
  if len(name) > 150:
    name = name[:140] + '-' + hashlib.sha1(repr(values).encode()).hexdigest()[:8]
  return name


def run_names(runs: list[dict]) -> list[str]:
  """Distinct filesystem-safe names for the runs of one grid."""
  if not runs:
    return []
  short = _short_keys(list(runs[0]))
  names = [run_name(r, short) for r in runs]
  for i, name in enumerate(names):
    if names.count(name) > 1:  # values that differ only in unsafe characters
      names[i] = f'{name}-{hashlib.sha1(repr(runs[i]).encode()).hexdigest()[:8]}'
  return names


# ------------------------------------------------------------------ config ---

def _node(config, key):
  node, (*path, last) = config, key.split('.')
  for p in path:
    if p not in node or not hasattr(node[p], 'keys'):
      raise GridError(f'unknown config key {key!r}: {p!r} is not a section of the config')
    node = node[p]
  if last not in node:
    close = [k for k in node.keys() if k.lower().startswith(last[:3].lower())]
    hint = f' (did you mean {", ".join(".".join(path + [c]) for c in close)}?)' if close else ''
    raise GridError(f'unknown config key {key!r}{hint}')
  return node, last


def _assign(config, key, value, origin):
  node, last = _node(config, key)
  old = node[last]
  if isinstance(old, tuple) and isinstance(value, list):
    value = tuple(value)
  try:
    node[last] = value
  except (TypeError, ValueError):
    raise GridError(f'{origin}: {key}={value!r} ({type(value).__name__}) does not fit the '
                    f'config field of type {type(old).__name__} (now {old!r})') from None


def parse_set(item: str, config) -> tuple[str, str, object]:
  """'train.steps=300' -> (key, the text for detx.main, the parsed value)."""
  key, eq, text = item.partition('=')
  key = key.strip()
  if not eq or not _KEY.fullmatch(key):
    raise GridError(f'--set {item!r}: expected key=value, e.g. --set train.steps=300')
  node, last = _node(config, key)
  if isinstance(node[last], str):
    value = text
  else:
    try:
      value = ast.literal_eval(text)
    except (SyntaxError, ValueError):
      value = text
  return key, text, value


def load_config(path):
  sys.path.insert(0, str(ROOT))
  from detx import config as cfg
  return cfg.load(str(path))


# ---------------------------------------------------------- run directories ---

def checkpoint_steps(run_dir: Path) -> list[int]:
  d = Path(run_dir) / 'checkpoints'
  if not d.is_dir():
    return []
  return sorted(int(p.name) for p in d.iterdir() if p.is_dir() and p.name.isdigit())


def read_metrics(run_dir: Path) -> list[dict]:
  path = Path(run_dir) / 'metrics.jsonl'
  rows = []
  if path.is_file():
    for line in path.read_text().splitlines():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut by a kill
        pass
  return rows


def _is_eval(row) -> bool:
  return 'eval/images' in row or any(k.startswith(EVAL_PREFIXES) for k in row)


def is_finished(run_dir: Path, steps: int) -> bool:
  """Latest checkpoint at `steps` and an evaluation logged at that step."""
  ckpts = checkpoint_steps(run_dir)
  return bool(ckpts) and ckpts[-1] == steps and any(
      _is_eval(r) and r.get('step') == steps for r in read_metrics(run_dir))


def run_results(run_dir: Path) -> dict:
  """The last train row's step and loss and the last evaluation's metrics."""
  rows = read_metrics(run_dir)
  out = {}
  train = [r for r in rows if 'train/loss' in r]
  if train:
    out['step'] = train[-1]['step']
    out['train/loss'] = train[-1]['train/loss']
  else:
    ckpts = checkpoint_steps(run_dir)
    if ckpts:
      out['step'] = ckpts[-1]
  evals = [r for r in rows if _is_eval(r)]
  if evals:
    out['eval_step'] = evals[-1]['step']
    out.update({k: v for k, v in evals[-1].items() if k.startswith(EVAL_PREFIXES)})
  return out


def last_error(log: Path) -> str:
  """The last line of a failed run's log that reads like an error."""
  if not log.is_file():
    return ''
  lines = [l.strip() for l in log.read_text(errors='replace').splitlines() if l.strip()]
  lines = [l for l in lines if not l.startswith('sweep:')]
  for line in reversed(lines):
    if re.match(r'^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b', line) or 'rror:' in line:
      return line[:200]
  return lines[-1][:200] if lines else ''


# ------------------------------------------------------------------ summary ---

def _fmt(v) -> str:
  if isinstance(v, float):
    return f'{v:.4g}'
  return '' if v is None else str(v)


def write_summary(workdir: Path, grid_keys, runs: list['Run']):
  eval_keys = []
  for r in runs:
    for k in r.results:
      if k.startswith(EVAL_PREFIXES) and k not in eval_keys:
        eval_keys.append(k)
  head = ['run', *grid_keys, 'status', 'step', 'train/loss', 'eval_step', *eval_keys, 'error']
  table = []
  for r in runs:
    row = {'run': r.name, 'status': r.status, 'error': r.error, **r.results}
    row.update({k: format_value(v) for k, v in r.values.items()})
    table.append([row.get(k) for k in head])
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(head)
  for row in table:
    w.writerow(['' if v is None else v for v in row])
  _write(workdir / 'summary.csv', buf.getvalue())
  # The markdown keeps the dataset-wide AP columns (and the error column when a run failed),
  # not the per-class ones (bbox/AP/<class>); the CSV has all.
  shown = [i for i, k in enumerate(head)
           if not (k.startswith(EVAL_PREFIXES) and ('/AP' not in k or k.count('/') > 1))
           and (k != 'error' or any(r.error for r in runs))]
  cell = lambda v: _fmt(v).replace('|', '\\|')
  md = ['# Sweep summary', '',
        f'Updated {time.strftime("%Y-%m-%d %H:%M:%S")}. '
        f'{sum(r.status == "done" for r in runs)}/{len(runs)} done. '
        f'Every metric is in summary.csv; each run logs to <run>/log.txt.', '',
        '| ' + ' | '.join(head[i] for i in shown) + ' |', '|' + '---|' * len(shown)]
  md += ['| ' + ' | '.join(cell(row[i]) for i in shown) + ' |' for row in table]
  _write(workdir / 'summary.md', '\n'.join(md) + '\n')


def _write(path: Path, text: str):
  tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
  tmp.write_text(text)
  os.replace(tmp, path)


# --------------------------------------------------------------------- runs ---

class Run:

  def __init__(self, name, values, workdir: Path, steps: int):
    self.name, self.values, self.steps = name, values, steps
    self.dir = workdir / name
    self.log = self.dir / 'log.txt'
    self.status, self.error, self.results = 'pending', '', {}
    self.proc, self.log_file, self.t0 = None, None, 0.0

  def refresh(self):
    self.results = run_results(self.dir)

  def note(self, text: str):
    self.dir.mkdir(parents=True, exist_ok=True)
    with self.log.open('a') as f:
      f.write(f'sweep: {time.strftime("%Y-%m-%d %H:%M:%S")} {text}\n')


def build_command(python, config_path, run: Run, sets: list[tuple[str, str]]) -> list[str]:
  cmd = shlex.split(python) + ['-m', 'detx.main', f'--config={config_path}', f'--workdir={run.dir}']
  cmd += [f'--config.{k}={text}' for k, text in sets]
  cmd += [f'--config.{k}={format_value(v)}' for k, v in run.values.items()]
  return cmd


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--config', required=True, help='configs/<name>.py')
  p.add_argument('--grid', required=True, help="'key=[v1,v2] key2=[...]' (Python literal lists)")
  p.add_argument('--workdir', required=True, help='the sweep directory; runs go in WORKDIR/<name>')
  p.add_argument('--parallel', type=int, default=1, help='runs at a time')
  p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                 help='a config override for every run (repeatable)')
  p.add_argument('--python', default=shlex.quote(sys.executable),
                 help="the command that runs python, split like a shell's "
                      "(e.g. 'taskset -c 0-7 python'); default: this interpreter")
  p.add_argument('--dry-run', action='store_true', help='print the runs and commands, run nothing')
  args = p.parse_args(argv)
  if args.parallel < 1:
    p.error('--parallel must be >= 1')
  config_path = Path(args.config).expanduser().resolve()
  if not config_path.is_file():
    p.error(f'--config {args.config}: no such file')
  try:
    grid = parse_grid(args.grid)
    config = load_config(config_path)
    sets = []
    for item in args.set:
      key, text, value = parse_set(item, config)
      if key in grid:
        raise GridError(f'{key} is both in --grid and --set')
      _assign(config, key, value, f'--set {item}')
      sets.append((key, text))
    workdir = Path(args.workdir).expanduser().resolve()
    combos = expand(grid)
    runs = []
    for name, combo in zip(run_names(combos), combos):
      c = config.copy_and_resolve_references()
      for k, v in combo.items():
        _assign(c, k, v, f'grid item {k}')
      runs.append(Run(name, combo, workdir, int(c.train.steps)))
  except GridError as e:
    print(f'sweep: error: {e}', file=sys.stderr)
    return 2
  if args.dry_run:
    for r in runs:
      print(f'{r.name}: {shlex.join(build_command(args.python, config_path, r, sets))}')
    return 0

  workdir.mkdir(parents=True, exist_ok=True)
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
  if args.parallel > 1:
    env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  keys = list(grid)
  todo = []
  for r in runs:
    r.refresh()
    if is_finished(r.dir, r.steps):
      r.status = 'done'
      r.note(f'skipped: finished (checkpoint and evaluation at step {r.steps})')
      print(f'sweep: skip {r.name}: finished (step {r.steps})', flush=True)
    else:
      todo.append(r)
  write_summary(workdir, keys, runs)
  print(f'sweep: {len(runs)} runs, {len(runs) - len(todo)} finished, {len(todo)} to run, '
        f'{args.parallel} at a time; summary in {workdir / "summary.md"}', flush=True)

  stopping = []

  def on_term(signum, frame):
    stopping.append(signum)
  old_term = signal.signal(signal.SIGTERM, on_term)
  running: list[Run] = []
  last_refresh = time.time()
  try:
    while (todo or running) and not stopping:
      while todo and len(running) < args.parallel and not stopping:
        r = todo.pop(0)
        cmd = build_command(args.python, config_path, r, sets)
        resumed = checkpoint_steps(r.dir)
        r.note(('resuming from step %d: ' % resumed[-1] if resumed else 'starting: ') + shlex.join(cmd))
        r.log_file = r.log.open('a')
        r.proc = subprocess.Popen(cmd, env=env, stdout=r.log_file,  # cwd: relative --set paths
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        r.status, r.error, r.t0 = 'running', '', time.time()
        running.append(r)
        print(f'sweep: start {r.name} (pid {r.proc.pid}'
              f'{", from step %d" % resumed[-1] if resumed else ""}); log {r.log}', flush=True)
        write_summary(workdir, keys, runs)
      time.sleep(0.5)
      if running and time.time() - last_refresh > 30:  # live steps and losses in the summary
        for r in running:
          r.refresh()
        write_summary(workdir, keys, runs)
        last_refresh = time.time()
      for r in list(running):
        if r.proc.poll() is None:
          continue
        _finish(r)
        running.remove(r)
        write_summary(workdir, keys, runs)
  except KeyboardInterrupt:
    stopping.append(signal.SIGINT)
  finally:
    signal.signal(signal.SIGTERM, old_term)
    if running:
      print(f'sweep: stopping {len(running)} runs (they checkpoint at the next step)', flush=True)
      for r in running:
        if r.proc.poll() is None:
          r.proc.send_signal(signal.SIGTERM)
      for r in running:
        try:
          r.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
          r.proc.kill()
          r.proc.wait()
        _finish(r)
      write_summary(workdir, keys, runs)
  done = sum(r.status == 'done' for r in runs)
  print(f'sweep: {done}/{len(runs)} done; summary in {workdir / "summary.md"}', flush=True)
  if stopping:
    return 130
  return 0 if done == len(runs) else 1


def _finish(r: Run):
  rc = r.proc.returncode
  r.log_file.close()
  r.refresh()
  took = time.time() - r.t0
  if rc == 0 and is_finished(r.dir, r.steps):
    r.status = 'done'
  elif rc == 0:
    r.status = 'incomplete'  # stopped by a signal before train.steps; a re-run resumes it
  else:
    r.status = 'failed'
    r.error = last_error(r.log)
  r.note(f'exit {rc}: {r.status} after {took:.0f}s')
  metric = {k: r.results[k] for k in ('bbox/AP50', 'segm/AP50') if k in r.results}
  extra = (' ' + ' '.join(f'{k}={v:.4f}' for k, v in metric.items())) if metric else ''
  print(f'sweep: {r.status} {r.name} (exit {rc}, {took:.0f}s, step {r.results.get("step", "-")}'
        f'{extra}){": " + r.error if r.error else ""}', flush=True)


if __name__ == '__main__':
  sys.exit(main())
