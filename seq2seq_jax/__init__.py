"""seq2seq_jax: the RNN encoder-decoder for machine translation in JAX/Flax.

For research code, `from seq2seq_jax import api as s2s` is the public API: load a config
and the data, build the model, init, the pure `train_step`/`eval_step`, batches,
translate, load a trained workdir and train populations (see `seq2seq_jax/api.py` and
docs/research.md). The API lives in its own module, not here, so that importing one
submodule (`from seq2seq_jax import text`) stays cheap and no API name shadows a module
(`seq2seq_jax.translate` and `seq2seq_jax.evaluate` are command-line tools).
"""
