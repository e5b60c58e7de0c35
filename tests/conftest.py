"""Shared pytest set-up: a compilation cache for the session, the order of the test files
and generic fixtures.

The cache: XLA programs compiled by one test (in this process, in a `train.py` subprocess or
on the other xdist worker) are read back by the next one that compiles the same program
instead of being compiled again; on CPU, compilation is most of these tests' time. It lives
in a temporary directory made for this pytest session (shared with its xdist workers and
every subprocess through the environment) and removed at its end, so a session starts
empty and never reads programs from an earlier version of the code."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Tests compile far more than they compute (tiny shapes, few steps), and XLA's CPU backend
# spends most of a compile in LLVM's optimisation passes: without them the suite ran 16%
# faster (summed test time, 2-core Zen 4). Set before JAX starts its backend (at the first
# computation, not at import), inherited by every subprocess (tests/distributed_runs.py
# keeps it). What a test compares is computed under the same flags.
TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
if TEST_XLA_FLAGS not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {TEST_XLA_FLAGS}'.strip()

_CACHE_VAR = 'SEQ2SEQ_JAX_TEST_COMPILE_CACHE'


def _session_compile_cache() -> str:
  """The session's cache directory: made by the first pytest process (the xdist controller,
  or the only process), inherited by the workers it starts."""
  path = os.environ.get(_CACHE_VAR)
  if not path:
    path = tempfile.mkdtemp(prefix='seq2seq_jax_test_compile_cache_')
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ[_CACHE_VAR] = path
  return path


CACHE_SETTINGS = {  # every program, however fast it compiled (many small ones add up)
  'jax_compilation_cache_dir': _session_compile_cache(),
  'jax_persistent_cache_min_compile_time_secs': 0.0,
  'jax_persistent_cache_min_entry_size_bytes': -1,
}
for _name, _value in CACHE_SETTINGS.items():
  os.environ[_name.upper()] = str(_value)  # for subprocesses (JAX reads them at import)
  jax.config.update(_name, _value)


# The files that take longest (mostly `train.py` subprocesses), longest first, run before
# the others. `make test` hands whole files to two xdist workers in collection order
# (`--dist loadfile --no-loadscope-reorder`): started first, the long files end while the
# short ones fill in on the other worker, and both workers finish at about the same time.
LONGEST_FIRST = (
  'test_train.py',
  'test_multihost.py',
  'test_pmap.py',
  'test_translate.py',
  'test_population_parallel.py',
  'test_population_steps.py',
  'test_population.py',
  'test_benchmark.py',
  'test_notebooks.py',
  'test_export.py',
  'test_serve.py',
  'test_page.py',
  'test_transformer.py',
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable


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
