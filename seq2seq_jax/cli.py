"""The start the command-line tools share (`train.py`, `translate`, `evaluate`, `average`,
`benchmark`): `app.run` with a `--help` that prints the command's usage and all of its own
flags (also those defined in another module, such as `translation_flags.define`'s, which
absl's `--help` leaves out) and exits 0; `--helpfull` adds absl's, JAX's and Orbax's
flags. A flag that does not parse is a one-line `error: ...` and exit status 1.

Also the log settings the tools share (`quiet_backend_probe`, `quiet_library_logs`,
`quiet_cli_logs`)."""

from __future__ import annotations

import logging as py_logging
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from absl import app, flags, logging

_HELP = ('help', 'helpshort', '?')
_HELPFULL = ('helpfull',)


def run(
  main: Callable[[list[str]], Any],
  *,
  flag_modules: Sequence[ModuleType | str] = (),
  flags_parser: Callable[[list[str]], list[str]] | None = None,
  usage: str | None = None,
) -> None:
  """`app.run(main)`, with the help above: `flag_modules` are the modules whose flags are
  the command's own besides its main module's; `usage` replaces the main module's
  docstring at the top of the help; `flags_parser` parses the other command lines."""
  parse = flags_parser or parse_flags

  def parser(argv: list[str]) -> list[str]:
    asked = _help_asked(argv)
    if asked:
      print(help_text(flag_modules, usage, full=asked == 'full'))
      sys.exit(0)
    return parse(argv)

  quiet_backend_probe()
  _adopt(flag_modules)  # absl's own usage messages list them too
  app.run(main, flags_parser=parser)


def parse_flags(argv: list[str]) -> list[str]:
  """`flags.FLAGS(argv)`; a flag that does not parse ends the program with one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f'error: {str(e).strip().splitlines()[0]} (see --help)', file=sys.stderr)
    sys.exit(1)


def help_text(
  flag_modules: Sequence[ModuleType | str] = (), usage: str | None = None, full: bool = False
) -> str:
  """The usage (the main module's docstring), then the flags of the main module and of
  `flag_modules` (with `full`, every flag defined)."""
  main = sys.argv[0]  # absl's name for the flags the main module defines
  doc = (usage or getattr(sys.modules['__main__'], '__doc__', None) or '').strip()
  doc = doc or f'usage: {main} [flags]'
  _adopt(flag_modules)
  if full:
    listed = flags.FLAGS.get_help()
    more = ''
  else:
    listed = flags.FLAGS.main_module_help()
    heading = f'\n{main}:\n'
    listed = listed[len(heading) :] if listed.startswith(heading) else listed
    more = '\n\n--helpfull also lists the flags of absl, JAX and the other libraries.'
  return f'{doc}\n\nflags:\n{listed.rstrip()}{more}'


def _adopt(flag_modules: Sequence[ModuleType | str]) -> None:
  """Makes the flags of `flag_modules` key flags of the main module (absl lists those)."""
  for module in flag_modules:
    for flag in flags.FLAGS.get_flags_for_module(module):
      flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def _help_asked(argv: Sequence[str]) -> str:
  """'full' for `--helpfull`, 'short' for `--help` (`-?`, `--helpshort`), else ''."""
  for arg in argv[1:]:
    if arg == '--':
      break
    name = arg.lstrip('-')
    if arg.startswith('-') and name in _HELPFULL:
      return 'full'
    if arg.startswith('-') and name in _HELP:
      return 'short'
  return ''


def _not_a_backend_probe(record: py_logging.LogRecord) -> bool:
  warning = record.levelno >= py_logging.WARNING
  return warning or not str(record.msg).startswith('Unable to initialize backend')


def quiet_backend_probe() -> None:
  """Drops JAX's INFO line for each accelerator it looks for and does not find (`Unable to
  initialize backend 'tpu': ... libtpu.so ...` on every machine without a TPU). A platform
  that JAX_PLATFORMS asks for and that fails is still an error, and JAX still finds the
  GPUs and TPUs that are there: only that log line goes."""
  py_logging.getLogger('jax._src.xla_bridge').addFilter(_not_a_backend_probe)


def _hide_orbax_below(level: int) -> None:
  """Drops Orbax's log records under `level` from absl's handler."""

  def keep(record: py_logging.LogRecord) -> bool:
    return record.levelno >= level or '/orbax/' not in record.pathname

  logging.get_absl_handler().addFilter(keep)


def quiet_library_logs() -> None:
  """For training: keeps Orbax's per-save INFO chatter and JAX's backend probe out of the
  log (warnings still show)."""
  quiet_backend_probe()
  _hide_orbax_below(py_logging.WARNING)


def quiet_cli_logs() -> None:
  """For the command-line tools: only warnings and errors on stderr, and none of Orbax's
  read-only-mode notices."""
  quiet_backend_probe()
  logging.set_verbosity(logging.WARNING)
  _hide_orbax_below(py_logging.ERROR)
