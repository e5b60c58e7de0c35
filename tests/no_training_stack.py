"""Runs a module with the training stack made unimportable, as on a machine that has only
what an exported model needs (JAX, NumPy, SentencePiece):

  python tests/no_training_stack.py seq2seq_jax.serve --model=DIR ...

Importing flax, optax, orbax, tensorflow_datasets or ml_collections raises ImportError."""

from __future__ import annotations

import importlib.abc
import runpy
import sys
from pathlib import Path

BLOCKED = frozenset({'flax', 'optax', 'orbax', 'tensorflow_datasets', 'ml_collections'})


class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name: str, path: object = None, target: object = None) -> None:
    if name.split('.')[0] in BLOCKED:
      raise ImportError(f'{name} is not importable here (no training stack)')


if __name__ == '__main__':
  sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
  sys.meta_path.insert(0, Block())
  module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
  runpy.run_module(module, run_name='__main__', alter_sys=True)
