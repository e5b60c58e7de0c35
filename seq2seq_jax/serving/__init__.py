"""The translation server: a trained or exported model behind LibreTranslate's HTTP API.

`batcher` gathers the sentences of many concurrent requests into the few batch shapes the
model compiled and decodes each batch in one call; `app` is the FastAPI application
(`create_app(searcher, settings)`: the API, the limits, the health, readiness and
Prometheus endpoints and the page at `/`); `seq2seq_jax.serve` is the command that runs it
with uvicorn. See docs/serving.md for the design.
"""
