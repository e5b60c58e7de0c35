"""The chapter notebooks (examples/*.ipynb) run end to end, as a reader runs them: nbclient
executes every cell in a Python kernel of this environment, in examples/, with the
parameters cell's values replaced by tiny ones (made-up data, 2 epochs, a tiny model).
They print the book's four examples in its format and draw attention heatmaps; the
committed notebooks are what examples/make_notebooks.py writes (no stored outputs)."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from typing import Any

import nbclient
import nbformat
import pytest

from seq2seq_jax import api as s2s
from seq2seq_jax import attention_plot, errors
from tests import synthetic

EXAMPLES = Path(__file__).resolve().parents[1] / 'examples'
BOOK_SOURCES = ['go .', 'i lost .', "he's calm .", "i'm home ."]
EXAMPLE_LINE = re.compile(r'(.+) => .*, bleu \d\.\d{3}')

TINY = {  # both notebooks: 64 training and 16 validation pairs, 2 epochs of 2 batches
  'TRAIN_PAIRS': 64,
  'VAL_PAIRS': 16,
  'EPOCHS': 2,
  'BATCH_SIZE': 32,
}
TINY_MODELS = {
  'seq2seq_chapter': dict(embed_size=8, num_hiddens=16, num_layers=1, dropout=0.0),
  'transformer_chapter': dict(num_hiddens=16, num_layers=1, num_heads=2, ffn_size=16, dropout=0.0),
}


def load_generator() -> Any:
  spec = importlib.util.spec_from_file_location('make_notebooks', EXAMPLES / 'make_notebooks.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_committed_notebooks_are_the_generated_ones_without_outputs() -> None:
  for name, text in load_generator().written().items():
    committed = (EXAMPLES / name).read_text(encoding='utf-8')
    assert committed == text, f'examples/{name} differs: run python examples/make_notebooks.py'
    nb = nbformat.reads(committed, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == 'code']
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert [c for c in code if 'parameters' in c.metadata.get('tags', [])] == code[:1]


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
  """Made-up pairs, and one TFDS directory for both notebooks (prepared once)."""
  root = tmp_path_factory.mktemp('notebook_data')
  fra = synthetic.write_fra_txt(root / 'fra-eng', n=TINY['TRAIN_PAIRS'] + TINY['VAL_PAIRS'])
  return {'DATA_DIR': str(fra), 'TFDS_DIR': str(root / 'tfds')}


def test_attention_refuses_a_plain_decoder_and_a_blank_sentence(
  data_dirs: dict[str, str],
) -> None:
  config = s2s.load_config('d2l')
  config.data.manual_dir, config.data.data_dir = data_dirs['DATA_DIR'], data_dirs['TFDS_DIR']
  config.data.train_split = f'full[:{TINY["TRAIN_PAIRS"]}]'
  config.data.val_split = f'full[{TINY["TRAIN_PAIRS"]}:]'
  config.model.update(TINY_MODELS['seq2seq_chapter'])
  data = s2s.load_data(config)
  # Both are refused before anything is decoded: no parameters needed (none compiled).
  with pytest.raises(attention_plot.NoAttentionError, match="model.decoder='attention'"):
    s2s.attention(s2s.build_model(config, data), None, data, 'go .')
  config.model.decoder = 'attention'
  with pytest.raises(errors.DataError, match='blank'):
    s2s.attention(s2s.build_model(config, data), None, data, '  ')


def with_parameters(nb: nbformat.NotebookNode, values: dict[str, Any]) -> nbformat.NotebookNode:
  """The notebook with a cell assigning `values` after its parameters cell (as papermill
  injects them); each must be a name that cell assigns."""
  index = next(i for i, c in enumerate(nb.cells) if 'parameters' in c.metadata.get('tags', []))
  assigned = {
    target.id
    for node in ast.parse(nb.cells[index].source).body
    if isinstance(node, ast.Assign)
    for target in node.targets
  }
  assert set(values) <= assigned, f'not in the parameters cell: {set(values) - assigned}'
  source = '\n'.join(f'{name} = {value!r}' for name, value in values.items())
  nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, id='injected-parameters'))
  return nb


def outputs(nb: nbformat.NotebookNode, kind: str) -> list[Any]:
  found = []
  for c in nb.cells:
    for out in c.get('outputs', []):
      if kind == 'stdout' and out.output_type == 'stream' and out.name == 'stdout':
        found += out.text.splitlines()
      elif kind == 'png' and out.output_type == 'display_data' and 'image/png' in out.data:
        found.append((c.id, out.data['image/png']))
  return found


@pytest.mark.parametrize('name', ['seq2seq_chapter', 'transformer_chapter'])
def test_notebook_runs_end_to_end(name: str, data_dirs: dict[str, str]) -> None:
  nb = nbformat.read(EXAMPLES / f'{name}.ipynb', as_version=4)
  nb = with_parameters(nb, {**data_dirs, **TINY, 'MODEL': TINY_MODELS[name]})
  # A cell that raises stops the run with a CellExecutionError naming the cell.
  nbclient.NotebookClient(
    nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(EXAMPLES)}}
  ).execute()

  lines = outputs(nb, 'stdout')
  examples = [m.group(1) for m in map(EXAMPLE_LINE.fullmatch, lines) if m]
  runs = 2 if name == 'seq2seq_chapter' else 1  # the plain and the attention model
  assert examples == BOOK_SOURCES * runs, lines
  assert any(re.fullmatch(r'loss [\d.]+ -> [\d.]+ in 4 steps', line) for line in lines), lines
  images = outputs(nb, 'png')
  heatmap_cells = {
    c.id for c in nb.cells if 'show_attention(' in c.source and 'def ' not in c.source
  }
  heatmaps = [png for cell_id, png in images if cell_id in heatmap_cells]
  assert len(heatmaps) == (1 if name == 'seq2seq_chapter' else 2)
  assert len(images) == runs + len(heatmaps)  # a loss plot per model, then the heatmaps
