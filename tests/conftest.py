"""Shared pytest fixtures (generic helpers only)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest


def draw_params(module: nn.Module, *args: Any, seed: int = 0, scale: float = 0.5) -> Any:
  """Parameters of `module.init(key, *args)`'s shapes drawn U(-scale, scale) in NumPy.

  For tests whose assertions hold for any parameters: no PRNG program to compile, which
  on CPU costs seconds per model."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), *args)['params']
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(rng.uniform(-scale, scale, s.shape), s.dtype), shapes)


@pytest.fixture
def random_params() -> Callable[..., Any]:
  """`random_params(module, *init_args, seed=0, scale=0.5)`: see `draw_params`."""
  return draw_params
