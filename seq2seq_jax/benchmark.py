"""`python -m seq2seq_jax.benchmark`: the speed benchmark's command (a contract of
DESIGN.md); the code is `seq2seq_jax/benchmarks/speed.py`."""

from absl import app

from seq2seq_jax.benchmarks import speed

if __name__ == '__main__':
  speed.define_flags()
  app.run(speed.main)
