"""Trains a seq2seq model.

  python train.py --config=configs/NAME.py --workdir=DIR [--config.FIELD=VALUE ...]

`--config` is a config file (configs/: d2l.py, default.py, ...). `--config.FIELD=VALUE`
sets one of its fields, e.g. `--config.train.time_budget_s=1800` (stop cleanly after 30
minutes) or `--config.data.manual_dir=DIR` (the data, offline); the fields, their
defaults and what they do are described in configs/default.py. Resumes when the workdir
holds a checkpoint; SIGTERM or Ctrl-C saves and exits. Bad input ends with a one-line
error and exit status 1.
"""

# A thin entry point: flags, the host memory setting, the device report, then
# `loop.train_and_evaluate`.

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from seq2seq_jax import cli, compile_cache, errors
from seq2seq_jax.models import ops
from seq2seq_jax.train import hostmem, loop, multihost

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and plots.')
config_flags.DEFINE_config_file('config', None, 'Training configuration file.', lock_config=True)
flags.DEFINE_bool(
  'tune_malloc',
  True,
  'Make glibc reuse freed host memory (XLA on CPU: no page faults each step; '
  'see seq2seq_jax/train/hostmem.py). Only where the CPU kernel forms are in use.',
)
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.tune_malloc and ops.forms(ops.expected_backend()).tune_malloc:
    hostmem.tune_host_malloc()  # before JAX allocates anything large
  cli.quiet_library_logs()
  with errors.one_line_errors():
    multihost.initialize(FLAGS.config.distributed)  # before JAX picks its devices
  cache = compile_cache.enable()
  dtype = FLAGS.config.model.dtype
  dtype = f'{ops.auto_dtype()} (auto)' if dtype == 'auto' else dtype
  logging.info(
    'JAX %s on %s (%s kernel forms, %s matmuls): process %d of %d, %d local device(s) %s; '
    'compilation cache %s',
    jax.__version__,
    jax.default_backend(),
    ops.forms().name,
    dtype,
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.local_devices(),
    cache or 'off',
  )
  with errors.one_line_errors():
    loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  cli.run(main, flags_parser=errors.config_flags_parser())
