"""Held-out splits carved from training pairs by source sentence.

Validation and test each take `SHARE` of the source sentences, by a stable hash of the
preprocessed source (`split_position`: md5, its percentile, then 64 more bits to order
the sources within it), up to `MAX_SOURCES` distinct sources each (`carve`): past the cap
the sources of highest position go back to training. All translations of one source land
in one split, the same corpus and settings give the same splits, and a corpus under the
cap keeps the uncapped split (`split_of`). Used by the Tatoeba builder (`tatoeba.py`) and
for text and TSV files (`filesources.py`).
"""

from __future__ import annotations

import dataclasses
import fractions
import hashlib
import heapq
from collections.abc import Iterable

from seq2seq_jax import errors
from seq2seq_jax.data import text

# Each of validation and test takes this
# share of the source sentences, up to this many distinct sources (0: no cap). The book's
# file (3,400 pairs of 2,400 sources in validation, 2,200 sources in test, English to
# French; 3,150 each French to English) is under the cap: its split is the uncapped one.
SHARE = 0.02  # the defaults of data.heldout_share and data.heldout_max_sources
MAX_SOURCES = 5000
_FINE = 1 << 64  # positions within a percentile


def split_position(source: str) -> int:
  """Where a source sentence lies on the line [0, 100 * 2**64) that the held-out splits
  cut: the md5 of its preprocessed text modulo 100 (its percentile), then 64 more of its
  bits (its place within the percentile)."""
  h = int.from_bytes(hashlib.md5(text.preprocess(source).encode('utf-8')).digest())
  return (h % 100) * _FINE + (h // 100) % _FINE


@dataclasses.dataclass(frozen=True)
class Carving:
  """The held-out splits as ranges of `split_position`: test `[0, test_end)`, validation
  `[width, validation_end)`, where `width` is the share's (2%: the percentiles 0-1 and
  2-3) and an end below `width` (or `2 * width`) is a cap: the sources above it stay in
  training."""

  width: int
  test_end: int
  validation_end: int

  def split(self, source: str) -> str:
    """The split ('train', 'validation' or 'test') of a pair, from its source sentence."""
    return self.split_at(split_position(source))

  def split_at(self, position: int) -> str:
    """The split of a source at this `split_position`."""
    if position < self.width:
      return 'test' if position < self.test_end else 'train'
    if position < 2 * self.width:
      return 'validation' if position < self.validation_end else 'train'
    return 'train'


def share_width(share: float, max_sources: int) -> int:
  """The share's range of `split_position`s; one-line errors for settings that cannot be."""
  exact = fractions.Fraction(str(share))  # 0.02 exactly: the book's 2 percentiles
  if not 0 < exact <= fractions.Fraction(1, 2):
    raise errors.ConfigError(f'data.heldout_share must be above 0 and at most 0.5, got {share}')
  if max_sources < 0:
    raise errors.ConfigError(
      f'data.heldout_max_sources must be 0 (no cap) or more, got {max_sources}'
    )
  return int(exact * 100 * _FINE)


def carve(
  share: float = SHARE, max_sources: int = MAX_SOURCES, positions: Iterable[int] = ()
) -> Carving:
  """Validation and test, each `share` of the sources and, when its range holds more than
  `max_sources` distinct ones among `positions` (the `split_position` of every training
  pair's source, repeats allowed), only its `max_sources` lowest: the rest goes back to
  training. The same corpus and settings give the same splits, disjoint by source; a
  corpus under the cap keeps the uncapped split. One pass over `positions`, holding at
  most `max_sources + 1` of them per split."""
  width = share_width(share, max_sources)
  ends = {'test': width, 'validation': 2 * width}
  if max_sources:
    lowest: dict[str, tuple[list[int], set[int]]] = {name: ([], set()) for name in ends}
    for position in positions:
      if position >= 2 * width:
        continue
      heap, kept = lowest['test' if position < width else 'validation']  # max-heap (negated)
      if position in kept:
        continue
      if len(heap) <= max_sources:
        heapq.heappush(heap, -position)
        kept.add(position)
      elif position < -heap[0]:
        kept.discard(-heapq.heapreplace(heap, -position))
        kept.add(position)
    for name, (heap, _) in lowest.items():
      if len(heap) > max_sources:  # the (max_sources + 1)-th lowest: held out below it
        ends[name] = -heap[0]
  return Carving(width, ends['test'], ends['validation'])


_UNCAPPED = carve(SHARE, 0)


def split_of(source: str, carving: Carving | None = None) -> str:
  """The split ('train', 'validation' or 'test') of a pair, from its source sentence
  (by default the uncapped 2% each, the split of any corpus under the cap)."""
  return (carving or _UNCAPPED).split(source)
