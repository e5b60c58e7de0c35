"""One-line errors for the command-line tools: bad input ends the program with a message
that names the problem and exit status 1, not a traceback from deep inside."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


class UserError(RuntimeError):
  """Base of the project's own errors about input, data, configs and checkpoints."""


# Errors that mean "the input is wrong", as opposed to a bug (which keeps its traceback).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, UserError)


@contextlib.contextmanager
def one_line_errors(program: str = 'error') -> Iterator[None]:
  try:
    yield
  except USER_ERRORS as e:
    message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f'{program}: {message}', file=sys.stderr)
    sys.exit(1)


class TrainingError(UserError):
  """Training cannot go on (non-finite loss, mismatched workdir); the message says why."""
