"""The export lane: a tuned model (a run's adapters merged into its base, or a merged checkpoint)
written for other runtimes. ``airoad export gguf``: llama.cpp / Ollama (:mod:`airoad.export.gguf_run`).
Core ML is planned (docs/export.md)."""
