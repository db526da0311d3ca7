"""The denominator of experiments/benchmark.py's utilisation column: a device's peak
matmul rate in the row's dtype.

On an accelerator it is the vendor's dense (no 2:4 sparsity) figure from KNOWN_PEAKS,
matched on jax.devices()[0].device_kind; float32 rows use the TF32 figure because JAX's
default precision runs float32 matmuls and convs as TF32 on NVIDIA GPUs (Ampere on). On a
CPU, or a device not in the table, it is a matmul measured in the same run (matmul_gflops).
"""
import re
import time

import jax
import jax.numpy as jnp

# (device_kind regex, {row dtype: dense TFLOP/s}). First match wins: keep the more specific
# patterns first.
#   NVIDIA H100 / H200 datasheets (SXM): BF16 989 (1,979 with sparsity), TF32 494 (989);
#     the H200 is the H100's GH100 compute with more memory. Checked here only against
#     secondary pages (itkb.uw.cz "NVIDIA H200 vs B300", 2026-06: H200 SXM dense BF16 ~989).
#   H100 PCIe: BF16 756, TF32 378 (datasheet, sparsity halved; not re-checked here).
#   NVIDIA A100 datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf, as quoted
#     by glennklockwood.com/garden/processors/A100): BF16 312, TF32 156 dense.
#   NVIDIA L4 datasheet: FP16/BF16 242, TF32 120 "with sparsity" (as quoted by
#     grokipedia.com "NVIDIA L4 vs L40S" and a reseller's spec sheet) -> 121 / 60 dense.
#   Cloud TPU v5e (docs.cloud.google.com/tpu/docs/v5e): "Peak compute per chip (bf16) 197 TFLOPs".
#   Cloud TPU v4 (docs.cloud.google.com/tpu/docs/v4): 275 bf16 TFLOP/s per chip (not
#     re-checked here). TPUs get no float32 figure: their float32 matmuls are bf16 passes.
KNOWN_PEAKS = (
    (r'h100.*pcie', {'bfloat16': 756.0, 'float32': 378.0}),
    (r'\bh(100|200)\b', {'bfloat16': 989.0, 'float32': 494.0}),
    (r'\ba100\b', {'bfloat16': 312.0, 'float32': 156.0}),
    (r'\bl4\b', {'bfloat16': 121.0, 'float32': 60.0}),
    (r'tpu v5 ?(lite|e)\b', {'bfloat16': 197.0}),
    (r'tpu v4\b', {'bfloat16': 275.0}),
)


def known_peak(device_kind: str, dtype: str):
  """(GFLOP/s, source) of KNOWN_PEAKS for a device kind and row dtype, or None."""
  kind = device_kind.lower()
  for pattern, peaks in KNOWN_PEAKS:
    if re.search(pattern, kind):
      if dtype not in peaks:
        return None
      name = 'TF32' if dtype == 'float32' else dtype
      return peaks[dtype] * 1e3, f'{device_kind} {name} dense spec'
  return None


def matmul_gflops(n: int = 2048, seconds: float = 1.0, dtype: str = 'float32') -> float:
  """GFLOP/s of the fastest of a few n x n matmuls in `dtype` (about `seconds` long)."""
  a = jnp.ones((n, n), jnp.dtype(dtype))
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  best, start = float('inf'), time.perf_counter()
  while time.perf_counter() - start < seconds or best == float('inf'):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a))
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best / 1e9


class Peak:
  """The run's peak in one dtype: the spec of a known device, else a measured matmul
  (re-measured by `remeasure`, the best of both kept: a busy machine then shows as a
  low utilisation rather than an inflated one)."""

  def __init__(self, dtype: str = 'float32', device=None, measure=matmul_gflops):
    device = device or jax.devices()[0]
    self.dtype, self.measure = dtype, measure
    spec = known_peak(device.device_kind, dtype) if device.platform != 'cpu' else None
    if spec is not None:
      self.gflops, self.source, self.measured = spec[0], spec[1], False
    else:
      self.gflops = measure(dtype=dtype)
      self.source, self.measured = f'{dtype} matmul measured in this run', True

  def remeasure(self) -> bool:
    """True when a second measurement beat the first (the rows' fractions then change)."""
    if not self.measured:
      return False
    after = self.measure(dtype=self.dtype)
    if after > self.gflops:
      self.gflops = after
      return True
    return False
