"""Made-up English-French pairs for tests: a tiny grammar with a consistent word-by-word
translation, so small models can learn it and tests never need the real data."""

from __future__ import annotations

import random
from pathlib import Path

SUBJECTS = [('i', 'je'), ('you', 'tu'), ('he', 'il'), ('she', 'elle'), ('we', 'nous')]
VERBS = [('see', 'vois'), ('like', 'aime'), ('want', 'veux'), ('have', 'ai')]
OBJECTS = [
  ('the cat', 'le chat'),
  ('the dog', 'le chien'),
  ('a book', 'un livre'),
  ('the house', 'la maison'),
  ('an apple', 'une pomme'),
  ('the car', 'la voiture'),
]


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
  """n distinct-ish (English, French) pairs like ('I see the cat.', 'Je vois le chat.')."""
  rng = random.Random(seed)
  pairs = []
  for i in range(n):
    (se, sf), (ve, vf), (oe, of) = (rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS))
    end = '!' if i % 7 == 0 else '.'
    pairs.append((f'{se} {ve} {oe}{end}'.capitalize(), f'{sf} {vf} {of}{end}'.capitalize()))
  return pairs


def write_fra_txt(directory: str | Path, n: int = 80, seed: int = 0) -> Path:
  """Writes `fra.txt` (the book's two tab-separated columns) and returns its directory."""
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  lines = [f'{en}\t{fr}\n' for en, fr in make_pairs(n, seed)]
  (directory / 'fra.txt').write_text(''.join(lines), encoding='utf-8')
  return directory
