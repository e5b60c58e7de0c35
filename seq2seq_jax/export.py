"""A trained model as a self-contained folder that runs without the training stack.

  python -m seq2seq_jax.export --workdir=DIR [--ensemble=DIR2,DIR3] [--checkpoint=auto]
      --out=MODEL_DIR [--beam_size=4] [--alpha=0.75] [--dtype=float32|bfloat16]
      [--platforms=cpu,cuda,tpu] [--score_split=test]

The folder holds
  - `greedy.<group>.jaxexport` and `beam.<group>.jaxexport`: the encoder and the whole
    search (greedy; beam search with this beam size and length penalty, its n-best list
    and scores) as `jax.export` programs, symbolic in the batch and the source length (at
    most the model's `max_len`), lowered for each platform group: `cpu` (traced with the
    CPU kernel forms, `models/ops.py`) and `accelerator` (`cuda` and `tpu`, the plain
    forms); for one model with attention also `attention.<group>.jaxexport` (the weights
    over the source for a given output, for the server's heatmap);
  - `params.npz`: the parameters (float32, or `--dtype=bfloat16` for half the size; the
    programs compute in float32 either way), one array per leaf in the programs' order;
  - the tokenizers (the workdir's files as they are);
  - `manifest.json`: format version, JAX version, platforms and their files, languages,
    decoding settings, model description, the test score at export, and the sha256 of
    every file.
`seq2seq_jax.exported` loads it with JAX, NumPy and SentencePiece only. The folder is
written beside `--out` and renamed into place when complete; an existing `--out` is
replaced only with `--overwrite`. Prints the manifest's summary as one JSON line.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from seq2seq_jax import attention_plot, build, cli, errors, exported, inference, runtime, scoring
from seq2seq_jax.data import input_pipeline, tokenizers
from seq2seq_jax.decoding import beam_search, ensemble, greedy_search
from seq2seq_jax.models import ops

FORMAT, FORMAT_VERSION, MANIFEST = exported.FORMAT, exported.FORMAT_VERSION, exported.MANIFEST
PARAMS = 'params.npz'
# Platform groups: the platforms lowered from one trace, and the kernel forms traced with.
GROUPS = {'cpu': (('cpu',), 'cpu'), 'accelerator': (('cuda', 'tpu'), 'plain')}
PLATFORMS = ('cpu', 'cuda', 'tpu')
PARAM_DTYPES = ('float32', 'bfloat16')


def _groups(platforms: Sequence[str]) -> dict[str, tuple[str, ...]]:
  """Platform group -> the asked platforms in it."""
  unknown = sorted(set(platforms) - set(PLATFORMS))
  if unknown or not platforms:
    raise errors.ConfigError(f'--platforms takes some of {",".join(PLATFORMS)}, got {platforms}')
  out = {}
  for group, (members, _) in GROUPS.items():
    chosen = tuple(p for p in members if p in platforms)
    if chosen:
      out[group] = chosen
  return out


def _matmul_dtype(config: Any, group: str) -> str:
  """`model.dtype` made concrete for a platform group ('auto': as that backend would)."""
  name = str(config.model.dtype)
  if name != 'auto':
    return name
  return ops.auto_dtype('cpu' if group == 'cpu' else 'gpu')


def _search_fns(model: Any, treedef: Any, out_len: int, beam_size: int, alpha: float) -> dict:
  """The two searches as functions of (parameter leaves, src, src_len): the leaves in the
  stored dtype, cast to float32 before the model sees them."""

  def params_of(leaves: list) -> Any:
    return jax.tree.unflatten(treedef, [jnp.asarray(x, jnp.float32) for x in leaves])

  def greedy(leaves: list, src: jax.Array, src_len: jax.Array) -> jax.Array:
    return greedy_search.greedy_decode(model, params_of(leaves), src, src_len, max_len=out_len)

  def beam(leaves: list, src: jax.Array, src_len: jax.Array) -> tuple[jax.Array, jax.Array]:
    return beam_search.beam_search(
      model, params_of(leaves), src, src_len, beam_size=beam_size, max_len=out_len, alpha=alpha
    )

  def attention(leaves: list, src: jax.Array, src_len: jax.Array, ids: jax.Array) -> jax.Array:
    return attention_plot.attention_weights(model, params_of(leaves), src, src_len, ids)

  fns = {'greedy': greedy, 'beam': beam}
  if getattr(model, 'has_attention', False):  # one model (not an ensemble) with attention
    fns['attention'] = attention
  return fns


def export_programs(
  translator: inference.Translator,
  leaves: list[np.ndarray],
  treedef: Any,
  groups: dict[str, tuple[str, ...]],
  beam_size: int,
  alpha: float,
) -> dict[str, dict[str, Any]]:
  """{group: {'greedy': Exported, 'beam': Exported, 'matmul_dtype': str, 'forms': str}}."""
  config = translator.config
  b, t = jax.export.symbolic_shape('b, t', constraints=(f'{translator.max_len} >= t',))
  specs = (
    [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
    jax.ShapeDtypeStruct((b, t), jnp.int32),
    jax.ShapeDtypeStruct((b,), jnp.int32),
  )
  ids_spec = jax.ShapeDtypeStruct((b, translator.output_len), jnp.int32)
  out = {}
  for group, platforms in groups.items():
    forms = GROUPS[group][1]
    cfg = config.copy_and_resolve_references()
    cfg.model.dtype = _matmul_dtype(config, group)
    model = build.model(cfg, translator.src_tok.vocab_size, translator.tgt_tok.vocab_size)
    if translator.ensemble_size > 1:
      model = ensemble.Ensemble(model, translator.ensemble_size)
    fns = _search_fns(model, treedef, translator.output_len, beam_size, alpha)
    entry: dict[str, Any] = {'matmul_dtype': cfg.model.dtype, 'forms': forms}
    with ops.use_forms(forms):
      for name, fn in fns.items():
        args = (*specs, ids_spec) if name == 'attention' else specs
        entry[name] = jax.export.export(jax.jit(fn), platforms=platforms)(*args)
    out[group] = entry
  return out


def _param_leaves(params: Any, dtype: str) -> tuple[list[np.ndarray], list[str], Any]:
  """The parameters as leaves in `dtype` (NumPy), their path names, and the tree."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = ['/'.join(str(getattr(k, 'key', k)) for k in path) for path, _ in flat]
  leaves = [np.asarray(jnp.asarray(x, jnp.dtype(dtype))) for _, x in flat]
  return leaves, names, treedef


def save_params(path: Path, leaves: list[np.ndarray], names: list[str]) -> None:
  """One array per leaf, keyed `NNNN:path` (the programs' order, then the name a person
  reads); bfloat16 stored as its uint16 bits (NumPy files have no bfloat16)."""
  arrays = {}
  for i, (x, name) in enumerate(zip(leaves, names, strict=True)):
    arrays[f'{i:04d}:{name}'] = x.view(np.uint16) if x.dtype == jnp.bfloat16 else x
  with open(path, 'wb') as f:
    np.savez(f, **arrays)


def test_score(searcher: runtime.Searcher, translator: inference.Translator, split: str) -> dict:
  """Greedy corpus BLEU/chrF of the exported programs on the workdir's `split`."""
  pairs = [p for p in input_pipeline.load_pairs(translator.config.data, split) if all(p)]
  refs = scoring.group_references([p[0] for p in pairs], [p[1] for p in pairs])
  sources = list(refs)
  hyps = [h[0].text for h in searcher.translate(sources)]
  form = scoring.form_for(translator.tgt_tok.kind, translator.config.data.tgt_lang)
  scores = scoring.score_translations(hyps, [refs[s] for s in sources], form)
  return {
    'split': split,
    'search': 'greedy',
    'sentences': len(sources),
    'bleu': round(float(scores['bleu']), 2),
    'chrf': round(float(scores['chrf']), 2),
  }


def export(
  workdirs: Sequence[str | Path],
  out: str | Path,
  *,
  checkpoint: str = 'auto',
  beam_size: int = 4,
  alpha: float = 0.75,
  dtype: str = 'float32',
  platforms: Sequence[str] = PLATFORMS,
  score_split: str = 'test',
  overwrite: bool = False,
) -> dict:
  """Writes the folder (see the module docstring); returns its manifest."""
  out = Path(out)
  if dtype not in PARAM_DTYPES:
    raise errors.ConfigError(f'--dtype must be one of {PARAM_DTYPES}, got {dtype!r}')
  if beam_size < 1:
    raise errors.ConfigError(f'--beam_size must be at least 1, got {beam_size}')
  if out.exists() and any(out.iterdir()) and not overwrite:
    raise errors.UserError(f'{out} exists and is not empty: choose another --out or --overwrite')
  groups = _groups(platforms)
  translator = inference.load(list(workdirs), checkpoint)
  config = translator.config
  leaves, names, treedef = _param_leaves(translator.params, dtype)
  logging.info('exporting %s (%d parameter arrays) for %s', workdirs, len(leaves), groups)
  programs = export_programs(translator, leaves, treedef, groups, beam_size, alpha)

  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f'.{out.name}.', dir=out.parent))
  try:
    save_params(tmp / PARAMS, leaves, names)
    kind = translator.src_tok.kind
    tok_files = []
    for src in tokenizers.paths(translator.workdirs[0], kind):
      shutil.copyfile(src, tmp / src.name)
      tok_files.append(src.name)
    platform_entries = {}
    for group, entry in programs.items():
      files = {}
      for name in [k for k in ('greedy', 'beam', 'attention') if k in entry]:
        files[name] = f'{name}.{group}.jaxexport'
        (tmp / files[name]).write_bytes(entry[name].serialize())
      for p in groups[group]:
        platform_entries[p] = {
          **files,
          'matmul_dtype': entry['matmul_dtype'],
          'kernel_forms': entry['forms'],
        }
    first = next(iter(programs.values()))['greedy']
    manifest = {
      'format': FORMAT,
      'format_version': FORMAT_VERSION,
      'jax_version': jax.__version__,
      'calling_convention_version': first.calling_convention_version,
      'created': datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds'),
      'platforms': platform_entries,
      'source_lang': config.data.src_lang,
      'target_lang': config.data.tgt_lang,
      'tokenizer': {'kind': kind, 'source': tok_files[0], 'target': tok_files[1]},
      'params': {'file': PARAMS, 'dtype': dtype, 'arrays': len(leaves)},
      'max_len': translator.max_len,
      'output_len': translator.output_len,
      'decoding': {'greedy': True, 'beam_size': beam_size, 'alpha': alpha},
      'model': {
        'arch': str(config.model.arch),
        'ensemble': translator.ensemble_size,
        'has_attention': translator.has_attention,
        'workdirs': list(translator.workdirs),
        'checkpoint': checkpoint,
        'step': int(translator.step),
        'parameters': int(sum(x.size for x in leaves)),
      },
    }
    manifest['files'] = {
      p.name: exported.sha256(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + '\n', encoding='utf-8')
    if score_split and 'cpu' in groups:
      try:
        manifest['test_score'] = test_score(exported.load(tmp), translator, score_split)
      except errors.UserError as e:  # the workdir's data moved: export without a score
        logging.warning('no test score: %s', e)
        manifest['test_score'] = {'split': score_split, 'error': str(e)}
      (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + '\n', encoding='utf-8')
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp's folder is private; the model folder is not
    if out.exists():
      shutil.rmtree(out)
    tmp.rename(out)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return manifest


FLAGS = flags.FLAGS


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise errors.ConfigError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_cli_logs()
  with errors.one_line_errors('export'):
    if not FLAGS.workdir or not FLAGS.out:
      raise errors.ConfigError('--workdir and --out are required')
    manifest = export(
      [FLAGS.workdir, *FLAGS.ensemble],
      FLAGS.out,
      checkpoint=FLAGS.checkpoint,
      beam_size=FLAGS.beam_size,
      alpha=FLAGS.alpha,
      dtype=FLAGS.dtype,
      platforms=FLAGS.platforms,
      score_split=FLAGS.score_split,
      overwrite=FLAGS.overwrite,
    )
    summary = {
      k: manifest[k] for k in ('format_version', 'jax_version', 'source_lang', 'target_lang')
    }
    summary.update(
      out=str(FLAGS.out),
      platforms=sorted(manifest['platforms']),
      step=manifest['model']['step'],
      beam_size=FLAGS.beam_size,
      params_dtype=FLAGS.dtype,
      test_score=manifest.get('test_score'),
    )
    print(json.dumps(summary), flush=True)


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'A workdir written by train.py.')
  flags.DEFINE_list('ensemble', [], 'More workdirs, comma-separated: export an ensemble.')
  flags.DEFINE_string('checkpoint', 'auto', "'auto', 'best', 'latest', 'averaged' or a step.")
  flags.DEFINE_string('out', None, 'The folder to write.')
  flags.DEFINE_integer('beam_size', 4, 'The beam of the exported beam search.', lower_bound=1)
  flags.DEFINE_float('alpha', 0.75, 'Length normalisation of beam search: logP / len**alpha.')
  flags.DEFINE_enum('dtype', 'float32', list(PARAM_DTYPES), 'The stored parameters.')
  flags.DEFINE_list('platforms', list(PLATFORMS), 'Platforms to lower for.')
  flags.DEFINE_string(
    'score_split', 'test', "Score the export greedily on this split of the workdir's data ('': no)."
  )
  flags.DEFINE_bool('overwrite', False, 'Replace an existing --out folder.')


if __name__ == '__main__':
  define_flags()
  cli.run(main)
