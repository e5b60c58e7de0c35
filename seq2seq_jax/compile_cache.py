"""JAX's persistent compilation cache, on by default for `train.py`, `translate`, `evaluate`
and `serve`: a program compiled once is read back from disk by the next start instead of
being compiled again (a server's second start is ready in seconds).

The folder is `--compilation_cache_dir` when given, else `$SEQ2SEQ_JAX_CACHE_DIR`, else
`jax/` under the user's cache directory (`$XDG_CACHE_HOME` or `~/.cache`) and then
`seq2seq_jax`; `--compilation_cache_dir=none` turns it off. JAX keys every entry by the
program, the JAX and XLA versions and the device, so a stale entry is never used; past
2 GiB the least recently used entries go. A folder set by the environment
(`JAX_COMPILATION_CACHE_DIR`, as the test suite does) wins.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from absl import flags

OFF = ('none', 'off', '')
MAX_BYTES = 2 << 30  # JAX evicts the least recently used entries past this size

_FLAG = flags.DEFINE_string(
  'compilation_cache_dir',
  None,
  "JAX's persistent compilation cache (default: ~/.cache/seq2seq_jax/jax; 'none' turns it off).",
)


def default_dir() -> Path:
  base = os.environ.get('SEQ2SEQ_JAX_CACHE_DIR')
  if base:
    return Path(base).expanduser() / 'jax'
  xdg = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
  return Path(xdg).expanduser() / 'seq2seq_jax' / 'jax'


def enable(path: str | None = None) -> Path | None:
  """Turns the cache on in `path` (default: the flag, else `default_dir()`); returns the
  folder, or None when turned off. Programs that compiled in under a second are cached
  too (a server compiles many small ones)."""
  if os.environ.get('JAX_COMPILATION_CACHE_DIR'):
    return Path(os.environ['JAX_COMPILATION_CACHE_DIR'])
  if path is None and _FLAG.present:
    path = _FLAG.value
  if path is not None and path.strip().lower() in OFF:
    return None
  folder = Path(path).expanduser() if path else default_dir()
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None  # a read-only home: run without the cache rather than fail
  jax.config.update('jax_compilation_cache_dir', str(folder))
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  jax.config.update('jax_compilation_cache_max_size', MAX_BYTES)
  return folder
