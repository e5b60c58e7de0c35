"""Numerical kernels under the modules: initialisers, matmuls, activations, argmax.

The modules in this package call these instead of `nn.Dense`, `jax.nn.sigmoid` and
`jnp.argmax`. Each has two forms: the plain one (`jnp.dot` with `dtype` inputs and
float32 accumulation plus the bias, `jax.nn.sigmoid`, `jnp.argmax`) and a CPU form that
says why it exists and what it was measured to gain on CPU (docs/performance.md). Both
compute the same values (to float rounding; a test checks values and gradients). Which
form runs is decided once, here, by `forms()`: the CPU forms on the CPU backend, where
they were measured to help, and the plain forms on GPU and TPU, where nobody measured
the CPU tricks and some of them (an extra contraction row off the multiples of 8 that
tensor cores want, copies behind optimisation barriers) are likely to cost time.
`SEQ2SEQ_KERNELS=cpu|plain` overrides the choice (benchmarks, tests); forms are read
when a function is traced.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.util
import math
import os
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from seq2seq_jax import errors

Array = jax.Array
Dtype = Any


@dataclasses.dataclass(frozen=True)
class Forms:
  """Which CPU-specific forms are in use (each False: the plain form)."""

  name: str
  tanh_sigmoid: bool  # `sigmoid` as 0.5 tanh(x / 2) + 0.5
  block_argmax: bool  # `first_argmax` through block maxima
  cpu_matmul: bool  # `Dense`: the bias as an extra matmul row; bfloat16 backward with
  # row-major copies behind optimisation barriers (custom VJPs)
  tune_malloc: bool  # `train.hostmem.tune_host_malloc` at start


CPU_FORMS = Forms('cpu', tanh_sigmoid=True, block_argmax=True, cpu_matmul=True, tune_malloc=True)
PLAIN_FORMS = Forms(
  'plain', tanh_sigmoid=False, block_argmax=False, cpu_matmul=False, tune_malloc=False
)
_FORMS = {'cpu': CPU_FORMS, 'plain': PLAIN_FORMS}
_override: list[Forms] = []


def forms(backend: str | None = None) -> Forms:
  """The forms for `backend` (default: JAX's default backend): `use_forms` inside its
  block, else `SEQ2SEQ_KERNELS` when set, else the CPU forms on 'cpu', plain elsewhere."""
  if _override:
    return _override[-1]
  chosen = os.environ.get('SEQ2SEQ_KERNELS', '').strip().lower()
  if chosen:
    if chosen not in _FORMS:
      raise errors.ConfigError(f'SEQ2SEQ_KERNELS must be one of {sorted(_FORMS)}, got {chosen!r}')
    return _FORMS[chosen]
  return CPU_FORMS if (backend or jax.default_backend()) == 'cpu' else PLAIN_FORMS


def expected_backend() -> str:
  """The backend JAX will pick, guessed without starting it (for settings that must come
  first, such as the host malloc): JAX_PLATFORMS' first entry, else 'gpu' or 'tpu' when
  their plugin is installed, else 'cpu'."""
  platforms = os.environ.get('JAX_PLATFORMS', '').strip()
  if platforms:
    first = platforms.split(',')[0].strip().lower()
    return 'gpu' if first in ('cuda', 'rocm') else first
  for module, backend in (
    ('jax_cuda13_plugin', 'gpu'),
    ('jax_cuda12_plugin', 'gpu'),
    ('jax_rocm7_plugin', 'gpu'),
    ('libtpu', 'tpu'),
  ):
    if importlib.util.find_spec(module) is not None:
      return backend
  return 'cpu'


# Flags of CPUs with bfloat16 dot products: x86 AVX512_BF16 and AMX-BF16, Arm BF16.
_BF16_FLAGS = frozenset({'avx512_bf16', 'amx_bf16', 'bf16'})


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
  """Whether the CPU (`/proc/cpuinfo`, or the text given) has bfloat16 dot products."""
  if cpuinfo is None:
    try:
      with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
        cpuinfo = f.read()
    except OSError:
      return False
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    if key.strip().lower() in ('flags', 'features') and _BF16_FLAGS & set(value.split()):
      return True
  return False


def auto_dtype(backend: str | None = None) -> str:
  """`model.dtype='auto'`: 'bfloat16' on GPU/TPU and on CPUs with bfloat16 dot products;
  'float32' on other CPUs, where XLA emulates bfloat16 matmuls and a training step was
  1.35x slower than in float32 (AVX2-only AMD EPYC; docs/performance.md)."""
  if (backend or jax.default_backend()) != 'cpu':
    return 'bfloat16'
  return 'bfloat16' if cpu_has_native_bf16() else 'float32'


@contextlib.contextmanager
def use_forms(chosen: Forms | str) -> Iterator[Forms]:
  """Traces inside the block use `chosen` ('cpu', 'plain' or a `Forms`): jit a fresh
  function inside it (a function already traced keeps its forms)."""
  chosen = _FORMS[chosen] if isinstance(chosen, str) else chosen
  _override.append(chosen)
  try:
    yield chosen
  finally:
    _override.pop()


def xavier_uniform(fan_in: int, fan_out: int) -> nn.initializers.Initializer:
  """Xavier-uniform with explicit fans: a kernel split in parts keeps the whole's scale."""
  return _uniform(math.sqrt(6.0 / (fan_in + fan_out)))


def _uniform(bound: float) -> nn.initializers.Initializer:
  def init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def torch_bias(fan_in: int) -> nn.initializers.Initializer:
  """PyTorch's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  return _uniform(1.0 / math.sqrt(fan_in))


def sigmoid(x: Array) -> Array:
  """The logistic function. CPU form: `0.5 * tanh(0.5 x) + 0.5`, the same values to
  float32 rounding and on CPU about twice as fast as XLA's `1 / (1 + exp(-x))` (one
  vectorised tanh instead of an exp and a division), which matters in the GRU's per-step
  gates."""
  if not forms().tanh_sigmoid:
    return jax.nn.sigmoid(x)
  return 0.5 * jnp.tanh(0.5 * x) + 0.5


def first_argmax(x: Array, block: int = 256) -> Array:
  """`jnp.argmax(x, axis=-1)` (the first maximal index) for finite x, ~10x faster on CPU.

  XLA's CPU argmax is one reduction over (value, index) pairs at a few ns per element;
  here the maxima of blocks of `block` entries (a plain windowed max, no copy) pick the
  first block holding the maximum, and argmax runs only inside that block (the CPU form;
  plain: `jnp.argmax`)."""
  size = x.shape[-1]
  if size <= block or not forms().block_argmax:
    return jnp.argmax(x, axis=-1).astype(jnp.int32)
  lead = (1,) * (x.ndim - 1)
  padding = [(0, 0)] * (x.ndim - 1) + [(0, -size % block)]
  maxima = jax.lax.reduce_window(
    x, -jnp.inf, jax.lax.max, lead + (block,), lead + (block,), padding
  )
  # The last window ends at `size`, overlapping the block before it: that block's entries
  # there are below the maximum (else it would have been chosen), so the index is exact.
  start = jnp.minimum(jnp.argmax(maxima, axis=-1).astype(jnp.int32) * block, size - block)
  window = jnp.take_along_axis(x, start[..., None] + jnp.arange(block, dtype=jnp.int32), -1)
  return start + jnp.argmax(window, axis=-1).astype(jnp.int32)


def _row_major_transpose(a: Array) -> Array:
  """`a.T` [n, m], copied row-major. XLA's CPU matmul library (YNNPACK) runs a matmul in
  bfloat16 only when both operands are row-major `[m, k] x [k, n]`; given a transpose, XLA
  folds it into the matmul and then runs that in float32 (or, for `x.T @ g`, in a slower
  fallback even in float32). The barrier keeps the copy (see docs/performance.md)."""
  return jax.lax.optimization_barrier(a.T.reshape(-1)).reshape(a.shape[::-1])


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _matmul(x: Array, w: Array, dtype: Dtype) -> Array:
  """x [m, k] @ w [k, n] -> float32 [m, n]: `dtype` inputs, float32 accumulation.

  The gradient's two matmuls also take `dtype` inputs (the incoming gradient rounded to
  it) and accumulate in float32; the gradients returned are float32, like x and w."""
  return jnp.dot(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


def _matmul_fwd(x: Array, w: Array, dtype: Dtype) -> tuple[Array, tuple[Array, Array]]:
  x, w = x.astype(dtype), w.astype(dtype)
  return jnp.dot(x, w, preferred_element_type=jnp.float32), (x, w)


def _matmul_bwd(dtype: Dtype, res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
  x, w = res
  g = g.astype(dtype)
  # float32 runs `g @ w.T` natively; bfloat16 needs w.T row-major.
  w_t = w.T if jnp.dtype(dtype) == jnp.float32 else _row_major_transpose(w)
  dx = jnp.dot(g, w_t, preferred_element_type=jnp.float32)
  dw = jnp.dot(_row_major_transpose(x), g, preferred_element_type=jnp.float32)
  return dx, dw


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _affine(x: Array, w: Array, b: Array, dtype: Dtype) -> Array:
  """x [m, k] @ w [k, n] + b [n] -> float32 [m, n], as `_matmul`.

  The bias rides in the matmul as one more row of w against a column of ones in x: no
  separate pass over the [m, n] result adds it, and its gradient comes out of the weight
  gradient's matmul rather than a column reduction, which is slow on CPU."""
  return _affine_fwd(x, w, b, dtype)[0]


def _affine_fwd(x: Array, w: Array, b: Array, dtype: Dtype) -> tuple[Array, tuple[Array, Array]]:
  x1 = jnp.concatenate([x, jnp.ones((x.shape[0], 1), x.dtype)], axis=1).astype(dtype)
  wb = jnp.concatenate([w, b[None, :]], axis=0).astype(dtype)
  return jnp.dot(x1, wb, preferred_element_type=jnp.float32), (x1, w.astype(dtype))


def _affine_bwd(dtype: Dtype, res: tuple[Array, Array], g: Array) -> tuple[Array, Array, Array]:
  x1, w = res
  g = g.astype(dtype)
  w_t = w.T if jnp.dtype(dtype) == jnp.float32 else _row_major_transpose(w)
  dx = jnp.dot(g, w_t, preferred_element_type=jnp.float32)  # k, not k + 1: a faster shape
  dwb = jnp.dot(_row_major_transpose(x1), g, preferred_element_type=jnp.float32)
  return dx, dwb[:-1], dwb[-1]


_affine.defvjp(_affine_fwd, _affine_bwd)


def affine(x: Array, w: Array, b: Array | None, dtype: Dtype) -> Array:
  """x [m, k] @ w [k, n] (+ b [n]) -> float32 [m, n] with `dtype` matmul inputs and float32
  accumulation: `_affine`/`_matmul` in the CPU forms, plain `jnp.dot` otherwise."""
  if forms().cpu_matmul:
    return _matmul(x, w, dtype) if b is None else _affine(x, w, b, dtype)
  y = jnp.dot(x.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)
  return y if b is None else y + b


def batched(spec: str, a: Array, b: Array, dtype: Dtype) -> Array:
  """`jnp.einsum(spec, a, b)` with `dtype` inputs and float32 accumulation and result: the
  attention's batched products (scores, weighted values). One form on every backend."""
  return jnp.einsum(spec, a.astype(dtype), b.astype(dtype), preferred_element_type=jnp.float32)


# `model.dtype` names: the matmul input types.
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def matmul_dtype(name: str) -> Dtype:
  """`model.dtype` ('float32', 'bfloat16' or 'auto': `auto_dtype()`) -> the dtype, or a
  `ConfigError` naming the field."""
  if name == 'auto':
    name = auto_dtype()
  if name not in DTYPES:
    raise errors.ConfigError(f"model.dtype must be 'auto' or one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


class Dense(nn.Module):
  """`nn.Dense`'s parameters ('kernel' [in, out], then 'bias' [out]) and results, through
  `affine`: `dtype` matmul inputs, float32 accumulation and result."""

  features: int
  use_bias: bool
  kernel_init: nn.initializers.Initializer
  bias_init: nn.initializers.Initializer
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kernel = self.param('kernel', self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    bias = None
    if self.use_bias:
      bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
    y = affine(flat, kernel, bias, self.dtype)
    return y.reshape(x.shape[:-1] + (self.features,))


def dense(
  features: int,
  fan_in: int,
  *,
  use_bias: bool = True,
  bias_fan_in: int | None = None,
  dtype: Dtype = jnp.float32,
  name: str | None = None,
) -> nn.Module:
  return Dense(
    features,
    use_bias=use_bias,
    kernel_init=xavier_uniform(fan_in, features),
    bias_init=torch_bias(bias_fan_in or fan_in),
    dtype=dtype,
    name=name,
  )


class TiedOutput(nn.Module):
  """The output layer tied to the target embedding table [vocab, embed]:
  logits = x @ table.T + bias, with x first projected to the embedding size ('proj', no
  bias) when the hidden size differs. Its parameters are the bias (and 'proj'); the
  table's gradient gets both the embedding's and the output layer's share."""

  features: int
  embed_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, table: Array) -> Array:
    if x.shape[-1] != self.embed_size:
      x = dense(self.embed_size, x.shape[-1], use_bias=False, dtype=self.dtype, name='proj')(x)
    bias = self.param('bias', torch_bias(self.embed_size), (self.features,), jnp.float32)
    flat = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
    y = affine(flat, table.T.astype(jnp.float32), bias, self.dtype)
    return y.reshape(x.shape[:-1] + (self.features,))
