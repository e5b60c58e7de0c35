"""`python -m seq2seq_jax.benchmark`: the speed benchmark's command (README.md,
"Architecture"); the code is `seq2seq_jax/benchmarks/speed.py`."""

from seq2seq_jax import cli
from seq2seq_jax.benchmarks import speed

if __name__ == '__main__':
  speed.define_flags()
  cli.run(speed.main, flag_modules=[speed], usage=speed.__doc__)
