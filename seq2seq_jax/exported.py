"""Runs a model folder written by `seq2seq_jax.export`, with JAX, NumPy and SentencePiece
only (and `flatbuffers`, which JAX's deserialisation needs): no Flax, Optax, Orbax, TFDS
or ml_collections.

  python -m seq2seq_jax.exported --model=MODEL_DIR [--beam] [--nbest=K] [SENTENCE ...]

translates like `seq2seq_jax.translate` (the sentences given, else standard input line
by line; one line out per line in; `--nbest=K`: one JSON object per line). In Python:

  from seq2seq_jax import exported
  searcher = exported.load('MODEL_DIR')          # a runtime.Searcher
  searcher.translate(['Go.'], beam=True, nbest=2)

`load` checks the folder before it runs anything: every file the manifest lists present
with its sha256, a format version this code reads, programs in JAX's export compatibility
window, and the platform JAX runs on among those exported. Each problem is one line
(`ExportError`) that says which and what to do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from seq2seq_jax import errors, runtime
from seq2seq_jax.data import text, tokenizers

FORMAT = 'seq2seq_jax.exported'  # what `seq2seq_jax.export` writes (it imports these)
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'


class ExportError(errors.UserError):
  """A model folder that cannot be run as it is."""


def sha256(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()


def read_manifest(folder: str | Path, verify: bool = True) -> dict:
  """The folder's manifest, after the checks of the module docstring (`verify`: also the
  files' sha256)."""
  folder = Path(folder)
  path = folder / MANIFEST
  if not folder.is_dir():
    raise ExportError(f'{folder} is not a folder: give the --out of seq2seq_jax.export')
  if not path.exists():
    raise ExportError(
      f'{folder} has no {MANIFEST}: it is not an exported model (or its export '
      'did not finish): export it again'
    )
  try:
    manifest = json.loads(path.read_text(encoding='utf-8'))
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ExportError(f'{path} is not readable JSON ({e}): export the model again') from None
  if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
    raise ExportError(f'{path} is not a {FORMAT} manifest: export the model again')
  version = manifest.get('format_version')
  if version != FORMAT_VERSION:
    raise ExportError(
      f'{folder} has format version {version!r}; this seq2seq_jax reads version '
      f'{FORMAT_VERSION}: export it again with this version (or run the version that wrote it)'
    )
  cc = manifest.get('calling_convention_version')
  lo = jax.export.minimum_supported_calling_convention_version
  hi = jax.export.maximum_supported_calling_convention_version
  if not isinstance(cc, int) or not lo <= cc <= hi:
    raise ExportError(
      f'{folder} was exported by JAX {manifest.get("jax_version")} (calling convention {cc}); '
      f'JAX {jax.__version__} runs {lo}..{hi}: export it again with this JAX, or install '
      f'jax=={manifest.get("jax_version")}'
    )
  files = manifest.get('files') or {}
  missing = sorted(name for name in files if not (folder / name).is_file())
  if missing:
    raise ExportError(
      f'{folder} is incomplete: {", ".join(missing)} missing; copy the whole '
      'folder or export it again'
    )
  if verify:
    for name, digest in files.items():
      if sha256(folder / name) != digest:
        raise ExportError(
          f'{folder / name} is corrupted (its sha256 differs from the '
          "manifest's): copy it again or export the model again"
        )
  return manifest


def platform() -> str:
  """The platform JAX runs on, as `jax.export` names it ('cpu', 'cuda', 'rocm', 'tpu')."""
  backend = jax.default_backend()
  if backend == 'gpu':
    return 'rocm' if 'rocm' in jax.devices()[0].client.platform_version.lower() else 'cuda'
  return backend


def load_params(path: Path, dtype: str) -> list[jax.Array]:
  """The parameter leaves of `params.npz`, in the programs' order, on the default device."""
  with np.load(path) as f:
    keys = sorted(f.files)  # 'NNNN:path'
    leaves = [f[k] for k in keys]
  if dtype == 'bfloat16':
    leaves = [x.view(jax.numpy.bfloat16) for x in leaves]
  return [jax.device_put(x) for x in leaves]


def _program(path: Path) -> Any:
  try:
    exp = jax.export.deserialize(bytearray(path.read_bytes()))
  except Exception as e:  # noqa: BLE001 (any failure to read the program is the folder's)
    raise ExportError(
      f'{path} could not be read by JAX {jax.__version__} ({e}): export again'
    ) from None
  return jax.jit(exp.call)


def load(folder: str | Path, max_batch: int = 64, verify: bool = True) -> runtime.Searcher:
  """A `runtime.Searcher` running the folder's programs for this platform."""
  folder = Path(folder)
  manifest = read_manifest(folder, verify)
  here = platform()
  entry = manifest['platforms'].get(here)
  if entry is None:
    raise ExportError(
      f'{folder} was exported for {", ".join(sorted(manifest["platforms"]))}, and JAX runs '
      f'on {here} here: export it with --platforms={here}'
    )
  src_tok, tgt_tok = tokenizers.load(folder, manifest['tokenizer']['kind'])  # the workdir's files
  return runtime.Searcher(
    greedy=_program(folder / entry['greedy']),
    beam=_program(folder / entry['beam']),
    params=load_params(folder / manifest['params']['file'], manifest['params']['dtype']),
    src_tok=src_tok,
    tgt_tok=tgt_tok,
    max_len=int(manifest['max_len']),
    beam_size=int(manifest['decoding']['beam_size']),
    source_lang=manifest['source_lang'],
    target_lang=manifest['target_lang'],
    max_batch=max_batch,
    attend=_program(folder / entry['attention']) if 'attention' in entry else None,
    description=manifest,
  )


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog='python -m seq2seq_jax.exported', description=__doc__.split('\n\n')[0]
  )
  parser.add_argument('--model', required=True, help='a folder written by seq2seq_jax.export')
  parser.add_argument('--beam', action='store_true', help='beam search (the exported beam)')
  parser.add_argument('--nbest', type=int, default=0, help='K best as JSON lines (beam)')
  parser.add_argument('--batch_size', type=int, default=64, help='sentences per call')
  parser.add_argument('sentences', nargs='*')
  args = parser.parse_args(argv)
  try:
    searcher = load(args.model, max_batch=args.batch_size)
    lines = args.sentences or [line.rstrip('\n') for line in sys.stdin]
    beam = args.beam or args.nbest > 0
    results = searcher.translate(lines, beam=beam, nbest=max(args.nbest, 1))
  except errors.UserError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  for line, hyps in zip(lines, results, strict=True):
    if args.nbest:
      hyps = [h for h in hyps if h.text or not text.is_blank(line)]
      record = {'source': line, 'hypotheses': [{'text': h.text, 'score': h.score} for h in hyps]}
      print(json.dumps(record, ensure_ascii=False))
    else:
      print(hyps[0].text)
  return 0


if __name__ == '__main__':
  sys.exit(main())
