"""build.py, the one place a config becomes objects: workdir configs read back with the
defaults filled in (workdirs of earlier versions), checkpoints of earlier versions still
restoring and translating, the optimizer and abstract state, a config left unchanged by
preparing a run, and validation BLEU during training equal to `evaluate`'s."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import pytest

from configs import tiny
from seq2seq_jax import build, errors, evaluate, inference
from seq2seq_jax.data import input_pipeline
from seq2seq_jax.train import checkpointing, experiment, steps
from tests import fixtures_workdir

# Fields a workdir of an earlier version does not record (model.arch, and a few others).
NEWER = {
  'model': ('arch', 'bidirectional', 'tie_embeddings'),
  'train': ('keep_best', 'patience', 'grad_accum_steps', 'parallel'),
  'data': ('heldout_share', 'heldout_max_sources', 'tokenizer_sentences', 'src_lang'),
}


def _as_older_version(config: dict) -> dict:
  config = json.loads(json.dumps(config))
  for group, names in NEWER.items():
    for name in names:
      config[group].pop(name)
  return config


@pytest.fixture(scope='module')
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
  return fixtures_workdir.trained_workdir(tmp_path_factory, 'attention')


def test_an_older_config_json_reads_back_with_the_defaults_filled_in(tmp_path: Path) -> None:
  config = tiny.get_config()
  config.model.num_hiddens = 24
  config.data.tokenizer = 'word'
  saved = _as_older_version(config.to_dict())
  saved['model']['a_field_of_its_own'] = 3
  (tmp_path / 'config.json').write_text(json.dumps(saved))

  back = build.workdir_config(tmp_path)
  defaults = build.default_config()
  assert back.model.arch == 'rnn'
  # Older runs had no tied output layer, whatever today's default says.
  assert back.model.tie_embeddings is False and defaults.model.tie_embeddings is True
  assert back.model.bidirectional is False
  for group, names in NEWER.items():
    for name in names:
      if f'{group}.{name}' not in build.BEFORE_THE_FIELD:
        assert back[group][name] == defaults[group][name], (group, name)
  assert back.model.num_hiddens == 24 and back.model.a_field_of_its_own == 3
  assert back.data.tokenizer == 'word' and back.data.train_split == 'full[:64]'
  # Every field of today's defaults is there.
  for group in ('data', 'model', 'train', 'eval', 'population'):
    assert set(defaults[group]) <= set(back[group]), group


def test_a_workdir_without_a_config_is_a_one_line_error(tmp_path: Path) -> None:
  with pytest.raises(errors.MissingFileError, match=r'not a training workdir \(no config.json\)'):
    build.workdir_config(tmp_path)
  with pytest.raises(errors.MissingFileError, match='does not exist'):
    build.workdir_config(tmp_path / 'nowhere')
  (tmp_path / 'config.json').write_text('{"model": ')
  with pytest.raises(errors.DataError, match='config.json is not a readable config'):
    build.workdir_config(tmp_path)


def test_a_checkpoint_from_before_model_arch_matches_arch_rnn() -> None:
  config = build.fill_defaults({'model': {'tie_embeddings': False}, 'data': {'tokenizer': 'word'}})
  current = checkpointing.signature(config, 30, 40)
  saved = {k: v for k, v in current.items() if k not in ('arch', 'bidirectional')}
  saved.pop('tie_embeddings')
  checkpointing.check_compatible(saved, current)  # no error
  with pytest.raises(checkpointing.CheckpointError, match="arch: checkpoint 'rnn' vs config 'x'"):
    checkpointing.check_compatible(saved, {**current, 'arch': 'x'})
  with pytest.raises(checkpointing.CheckpointError, match='tie_embeddings: checkpoint False'):
    checkpointing.check_compatible(saved, {**current, 'tie_embeddings': True})


def test_an_older_workdir_translates_and_averages_as_before(trained: Path, tmp_path: Path) -> None:
  old = tmp_path / 'old'
  shutil.copytree(trained, old)
  config = json.loads((old / 'config.json').read_text())
  (old / 'config.json').write_text(json.dumps(_as_older_version(config)))
  records = list((old / 'checkpoints').glob('*/*/meta/metadata'))
  assert records
  for path in records:  # checkpoint records of before model.arch (and two later fields)
    meta = json.loads(path.read_text())
    for name in NEWER['model']:
      meta['signature'].pop(name)
    path.write_text(json.dumps(meta))

  sentences = ['I see the cat.', '', 'We have a book.']
  expected = inference.load(trained, 'latest').translate(sentences)
  translator = inference.load(old, 'latest')
  assert translator.config.model.arch == 'rnn'
  assert translator.translate(sentences) == expected


def test_the_optimizer_and_abstract_state_come_from_the_config() -> None:
  config = tiny.get_config()
  model = build.model(config, 30, 40)
  state = steps.init_state(model, build.optimizer(config, 10), jax.random.key(0))
  abstract = build.abstract_state(config, model)
  shapes = lambda tree: jax.tree.map(lambda x: (x.shape, x.dtype), tree)  # noqa: E731
  assert shapes(abstract) == shapes(state)
  config.train.weight_decay = 0.1  # an optimizer field changes the optimizer's state tree
  assert jax.tree.structure(build.abstract_state(config, model)) != jax.tree.structure(abstract)


def test_preparing_a_run_leaves_the_config_as_it_was(
  tmp_path_factory: pytest.TempPathFactory,
) -> None:
  data = fixtures_workdir.data_dir(tmp_path_factory)
  config = tiny.get_config()
  config.data.manual_dir = str(data)
  config.data.data_dir = str(tmp_path_factory.mktemp('tfds'))
  config.data.train_split, config.data.val_split = 'full[:48]', 'full[48:60]'
  config.data.tokenizer = 'auto'
  before = config.to_dict()
  exp = experiment.prepare(config, tmp_path_factory.mktemp('prepared'))
  assert config.to_dict() == before
  assert exp.config.data.tokenizer == 'word'  # the book's corpus: the concrete choice
  assert exp.translator.batch_size == config.eval.decode_batch_size


def test_validation_bleu_during_training_equals_evaluate(trained: Path) -> None:
  records = [json.loads(line) for line in (trained / 'metrics.jsonl').read_text().splitlines()]
  last = [r for r in records if 'val_bleu' in r][-1]
  config = build.workdir_config(trained)
  assert config.eval.bleu_sentences == 0  # every validation source
  data = input_pipeline.prepare(config.data, str(trained))
  pairs = list(zip(data.val.sources, data.val.targets, strict=True))
  for batch_size in (config.eval.decode_batch_size, 512):
    translator = inference.load(trained, 'latest', batch_size=batch_size)
    assert translator.step == last['step']
    scores, _ = evaluate.evaluate(translator, pairs, evaluate.score_form(translator, 'auto'))
    assert scores['bleu'] == pytest.approx(last['val_bleu'], abs=1e-9)
    assert scores['chrf'] == pytest.approx(last['val_chrf'], abs=1e-9)
