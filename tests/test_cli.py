"""The command lines' first contact: `--help` shows each command's own flags and exits 0;
a mistyped or broken config file is one line naming it (and the configs there are); JAX's
probe for an absent TPU stays out of the logs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seq2seq_jax import cli, errors

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'PYTHONUNBUFFERED': '1'}
CONFIGS = (
  'd2l.py, d2l_attention.py, d2l_transformer.py, default.py'  # the start of configs/'s listing
)


def _start(*args: str) -> subprocess.Popen:
  return subprocess.Popen(
    [sys.executable, *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE
  )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
  out, err = proc.communicate(timeout=120)
  return proc.returncode, out.decode(), err.decode()


def test_help_shows_the_commands_own_flags_and_exits_0() -> None:
  procs = {  # started together: their JAX imports overlap where there are several cores
    'train': _start('train.py', '--help'),
    'translate': _start('-m', 'seq2seq_jax.translate', '--help'),
  }
  done = {name: _finish(proc) for name, proc in procs.items()}
  for name, (code, out, err) in done.items():
    assert code == 0 and 'Traceback' not in err, (name, err)
    assert '\nflags:\n' in out and '--helpfull' in out and '--verbosity' not in out, name
  out = done['train'][1]
  assert out.startswith('Trains a seq2seq model.')
  assert '--config.FIELD=VALUE' in out and '--config.train.time_budget_s=1800' in out
  assert 'configs/default.py' in out
  assert all(f'\n  --{flag}:' in out for flag in ('config', 'workdir', '[no]tune_malloc'))
  out = done['translate'][1]
  assert out.startswith('Translate with a trained workdir.')
  own = ('workdir', 'ensemble', 'checkpoint', 'batch_size', 'beam_size', 'alpha', 'max_len')
  own += ('max_len_ratio', '[no]sample', 'temperature', 'top_k', 'seed', 'nbest', 'plot_attention')
  assert [f for f in own if f'\n  --{f}:' not in out] == []  # inference.py's flags too


def test_a_missing_config_file_is_one_line_naming_it_and_the_configs(
  tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
  monkeypatch.chdir(ROOT)  # configs/ is named relative to the working directory
  # With an override, ml_collections ended in a traceback: the process, end to end.
  proc = _start(
    'train.py', '--config=configs/d2I.py', f'--workdir={tmp_path}/w', '--config.train.seed=1'
  )
  code, _, err = _finish(proc)
  assert code == 1 and len(err.strip().splitlines()) == 1, err
  assert err.startswith('error: config file configs/d2I.py does not exist; ')
  assert f'the configs in configs/: {CONFIGS}, ' in err and '__init__' not in err
  assert not (tmp_path / 'w').exists()
  # Without one (and `--config FILE`): the same parser, in-process.
  parse = errors.config_flags_parser()
  for argv in (['train.py', '--config', 'configs/d2I.py'], ['train.py', '--config=d2I.py']):
    with pytest.raises(SystemExit) as exit_:
      parse(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f'error: config file {argv[-1].removeprefix("--config=")} does not')
    assert f'the configs in configs/: {CONFIGS}, ' in err
  # A missing file in another folder: the configs beside it.
  (tmp_path / 'mine.py').write_text('def get_config():\n  return {}\n')
  message = errors.config_file_problem(['t', f'--config={tmp_path}/mien.py'])
  assert (
    message == f'config file {tmp_path}/mien.py does not exist; the configs in {tmp_path}/: mine.py'
  )


def test_a_config_file_that_does_not_load_is_one_line_naming_it(tmp_path: Path) -> None:
  files = {
    'imports.py': 'import no_such_module_here\n',
    'syntax.py': 'def get_config(:\n',
    'none.py': 'x = 1\n',
    'raises.py': 'def get_config(arg=None):\n  raise ValueError(f"no recipe {arg}")\n',
  }
  for name, text in files.items():
    (tmp_path / name).write_text(text)
  problem = {n: errors.config_file_problem(['t', f'--config={tmp_path / n}:x']) for n in files}
  assert problem['imports.py'] == (
    f'config file {tmp_path}/imports.py does not load: '
    "ModuleNotFoundError: No module named 'no_such_module_here'"
  )
  assert problem['syntax.py'].startswith(f'config file {tmp_path}/syntax.py does not load: Syn')
  assert problem['none.py'] == (
    f'config file {tmp_path}/none.py has no get_config() (it is what gives the config)'
  )
  assert problem['raises.py'] == (
    f"config file {tmp_path}/raises.py: get_config('x') failed: ValueError: no recipe x"
  )
  assert errors.config_file_problem(['t', '--config=configs/tiny.py']) is None
  assert errors.config_file_problem(['t', '--workdir=w']) is None  # absl: --config is required


def test_jax_probing_for_an_absent_tpu_is_not_logged() -> None:
  cli.quiet_backend_probe()
  logger = logging.getLogger('jax._src.xla_bridge')

  def record(level: int, msg: str) -> logging.LogRecord:
    return logger.makeRecord(logger.name, level, __file__, 1, msg, (), None)

  probe = "Unable to initialize backend 'tpu': INTERNAL: Failed to open libtpu.so"
  assert not logger.filter(record(logging.INFO, probe))
  assert logger.filter(record(logging.WARNING, probe))  # a warning or an error still shows
  assert logger.filter(record(logging.INFO, "Initializing backend 'cpu'"))
