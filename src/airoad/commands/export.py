"""`airoad export TARGET ...`: the export targets are the modules ``export_TARGET``."""

SUMMARY = "export a tune: gguf (llama.cpp/Ollama), coreml (iOS 18 / macOS 15)"
