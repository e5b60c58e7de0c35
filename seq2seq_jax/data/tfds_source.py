"""A TFDS translation dataset as a data source (`data.tfds_name`, e.g.
`wmt14_translate/de-en`): prepared in `data.data_dir` as array_record and read by random
access without TensorFlow; its features are named by language. TFDS is imported on use.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seq2seq_jax.data import textfiles
from seq2seq_jax.data.textfiles import SourceError


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """A prepared TFDS translation dataset, by name; splits as TFDS names them."""

  name: str
  data_dir: str
  src_lang: str
  tgt_lang: str

  field = 'tfds_name'
  book_corpus = False

  @classmethod
  def from_config(cls, data_cfg: Any) -> TfdsSource:  # noqa: ANN401
    data_dir = os.path.expanduser(data_cfg.data_dir)
    return cls(data_cfg.tfds_name, data_dir, data_cfg.src_lang, data_cfg.tgt_lang)

  def build(self) -> None:
    """Nothing to make: the dataset is prepared beforehand (`tfds build`)."""

  def builder(self) -> Any:  # noqa: ANN401
    """The TFDS builder, checked: prepared, as array_record, with both languages."""
    import tensorflow_datasets as tfds

    name, data_dir = self.name, self.data_dir
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 (TFDS raises several kinds for an unknown name)
      first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
      raise SourceError(f'data.tfds_name {name!r}: no such TFDS dataset ({first})') from None
    if not builder.is_prepared():
      raise SourceError(
        f'the TFDS dataset {name!r} is not prepared in {data_dir}: run '
        f'`tfds build {name} --data_dir={data_dir} --file_format=array_record` (or '
        "builder.download_and_prepare(file_format='array_record')) first"
      )
    file_format = getattr(builder.info, 'file_format', None)
    file_format = str(getattr(file_format, 'value', file_format) or '').lower()
    if file_format and file_format != 'array_record':
      raise SourceError(
        f'the TFDS dataset {name!r} in {data_dir} is prepared as {file_format}; random access '
        'needs array_record: rebuild it with --file_format=array_record'
      )
    features: Any = builder.info.features
    keys = list(features.keys()) if hasattr(features, 'keys') else []
    for lang in (self.src_lang, self.tgt_lang):
      if lang not in keys:
        raise SourceError(f'the TFDS dataset {name!r} has no language {lang!r} (it has {keys})')
    return builder

  def iter_pairs(self, split: str, chunk: int = 0) -> Iterator[list[tuple[str, str]]]:
    """Pairs of a split, read by random access (`__getitems__`) a chunk at a time."""
    chunk = chunk or textfiles.CHUNK
    builder = self.builder()
    base = textfiles.parse_split(split)[0]
    if base not in builder.info.splits:
      raise SourceError(
        f'the TFDS dataset {self.name!r} has no split {base!r} '
        f'(it has {sorted(builder.info.splits)})'
      )
    source = builder.as_data_source(split=split)
    for start in range(0, len(source), chunk):
      items = source.__getitems__(range(start, min(start + chunk, len(source))))
      yield [(_text(ex[self.src_lang]), _text(ex[self.tgt_lang])) for ex in items]

  def count(self, split: str) -> int:
    """How many pairs a split holds, from its index."""
    return len(self.builder().as_data_source(split=split))

  def content_key(self) -> str:
    """The dataset's name, version and folder."""
    import tensorflow_datasets as tfds

    try:
      version = tfds.builder(self.name, data_dir=self.data_dir).version
    except Exception:  # noqa: BLE001 (iter_pairs reports an unknown name in one line)
      version = '?'
    return f'tfds:{self.name}:{version}:{Path(self.data_dir).absolute()}'

  def heldout_settings(self) -> dict[str, Any]:
    """{}: the dataset's own splits, nothing carved."""
    return {}

  def describe(self) -> str:
    return f'the TFDS dataset {self.name!r}'


def _text(value: Any) -> str:  # noqa: ANN401
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)
