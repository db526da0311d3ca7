"""model.pretrained: start a run from released Paddle weights or from another detx run.

  --config.model.pretrained=/path/ResNet50_cos_pretrained   # Paddle 1.x dir, .tar or __params__
  --config.model.pretrained=/path/model_final.pdparams      # PaddleDetection 2.x
  --config.model.pretrained=https://.../ResNet50_cos_pretrained.tar   # downloaded once
  --config.model.pretrained=/path/to/detx/workdir           # its latest checkpoint

URLs and .tar files go through detx.weights.fetch (cache, size/hash check, safe
unpacking), .pdparams through detx.weights.pdparams (a restricted unpickler).

Paddle weights are matched by Paddle name (ParamRules.paddle of the model), 2.x
names first renamed to 1.x ones (detx.weights.ppdet2), with
ImageNet BN statistics folded into affine norms (load_and_fusebn); a detx checkpoint
is matched by variable path. Either way, variables the source lacks or holds with
another shape (a new head, another class count) keep their initial values and are
listed; a source that fills no variable at all is an error. Only a fresh run loads
them: a resumed run restores its own checkpoint instead.
"""
from pathlib import Path

import numpy as np
from flax import traverse_util

from detx import checkpoint
from detx.errors import PathError
from detx.weights import fetch, pdparams, ppdet2
from detx.weights import paddle as pw


def _from_checkpoint(variables, path):
  saved = checkpoint.restore_variables(path)
  source = traverse_util.flatten_dict(
      {k: saved.get(k, {}) for k in ('params', 'batch_stats')}, sep='/')
  flat = traverse_util.flatten_dict(variables, sep='/')
  new, loaded, missing, mismatched = dict(flat), [], [], []
  for key, target in flat.items():
    if key not in source:
      missing.append(key)
    elif tuple(np.shape(source[key])) != tuple(target.shape):
      mismatched.append(f'{key}: {np.shape(source[key])} in {path}, model needs {target.shape}')
    else:
      new[key] = np.asarray(source[key]).astype(target.dtype)
      loaded.append(key)
  return traverse_util.unflatten_dict(new, sep='/'), loaded, missing, mismatched


def _from_paddle(variables, path, rules, config=None):
  if not rules:
    raise pw.WeightLoadError(f'{path}: this model has no Paddle name rules; '
                             'model.pretrained can only be a detx checkpoint')
  source = str(path)
  if path.is_dir() and (path / '__params__').is_file() and not pw.list_paddle_dir(path):
    source = str(path / '__params__')  # an inference model directory
  elif path.suffix == '.pdparams':
    source = pdparams.load_pdparams(path)
    if ppdet2.looks_2x(source):
      if config is None:
        raise pw.WeightLoadError(f'{path}: PaddleDetection 2.x names need the model config')
      source, unmatched = ppdet2.to_1x(source, config)
      if unmatched:
        print(f'detx: {path}: {len(unmatched)} PaddleDetection 2.x variables have no detx '
              f'counterpart and are skipped, e.g. {", ".join(unmatched[:4])}', flush=True)
  new, report = pw.load_paddle_weights(variables, source, rules, strict=False,
                                       fuse_norm=True)
  mismatched = [f'{f}: {got} (Flax layout), {v} needs {want}'
                for v, f, want, got in report.mismatched]
  missing = [v for v, _ in report.missing] + report.unmapped
  return new, report.loaded, missing, mismatched


def load(variables: dict, path, paddle_rules=(), config=None) -> tuple[dict, str]:
  """({'params', 'batch_stats'} filled from `path`, a one-paragraph summary). `config`
  (the model's) is needed for PaddleDetection 2.x names (detx.weights.ppdet2)."""
  given = str(path)
  if not fetch.is_url(given) and not Path(given).expanduser().exists():
    raise PathError(f'model.pretrained: {given} does not exist; {fetch.RANDOM_INIT}')
  path = fetch.resolve(given)
  variables = {k: variables.get(k, {}) for k in ('params', 'batch_stats')}
  if checkpoint.is_checkpoint(path):
    new, loaded, missing, mismatched = _from_checkpoint(variables, path)
  else:
    new, loaded, missing, mismatched = _from_paddle(variables, path, paddle_rules, config)
  total = len(traverse_util.flatten_dict(variables))
  if not loaded:
    raise pw.WeightLoadError(f'model.pretrained: {path} fills none of the model\'s {total} '
                             'variables (wrong file, or a different architecture?)')
  lines = [f'detx: pretrained from {given}: loaded {len(loaded)} of {total} variables']
  if missing:
    lines.append(f'  {len(missing)} kept their initial values (not in the source), e.g. '
                 + ', '.join(missing[:4]))
  if mismatched:
    lines.append(f'  {len(mismatched)} re-initialised (another shape, e.g. a head for '
                 'another class count): '
                 + '; '.join(mismatched))
  return new, '\n'.join(lines)
