"""bf16 compute (f32 parameters, BatchNorm, loss) trains the quickstart like f32."""
import pytest

from detx import config as cfg
from detx import metrics, train
from detx.data import synthetic

STEPS = 300
AP50_TOLERANCE = 0.1


@pytest.mark.slow
def test_bf16_quickstart_trains_like_f32(tmp_path):
  data = synthetic.generate(tmp_path / 'shapes', seed=0)
  results = {}
  for dtype in ('float32', 'bfloat16'):
    c = cfg.load('quickstart')
    c.model.dtype = dtype
    c.data.dir = str(data)
    c.data.cache_dir = str(tmp_path / 'tfds')
    c.train.steps = STEPS
    c.train.log_every = 10
    workdir = tmp_path / dtype
    results[dtype] = train.train_and_evaluate(c, str(workdir))
    losses = [r['train/loss'] for r in metrics.read_metrics(workdir) if 'train/loss' in r]
    assert losses[-1] < 0.7 * losses[0], (dtype, losses)  # vs step 10, still in warmup
  f32, bf16 = results['float32']['bbox/AP50'], results['bfloat16']['bbox/AP50']
  assert bf16 > 0.1 and abs(bf16 - f32) <= AP50_TOLERANCE, (f32, bf16)
