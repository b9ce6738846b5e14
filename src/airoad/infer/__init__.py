"""Using a trained adapter: merge it into its base, compare base and tuned answers, score their style.

- :mod:`.schema`: the typed options of `airoad merge`, `airoad compare` and `airoad eval` (no torch).
- :mod:`.loading`: where base, adapter, tokenizer and system prompt come from; one model in memory
  serves both sides (the "base" side is the same PEFT model with its adapters disabled).
- :mod:`.prompts`: bundled prompts and ``--prompts`` files (ChatML, Alpaca or ``{"prompt": ...}`` rows).
- :mod:`.generate`: batched, left-padded generation with exact stop tokens and throughput per sample.
- :mod:`.sides`: the lane compare and eval share: prompts -> model -> answers of every side.
- :mod:`.drift`: mean per-token KL(tuned || base) over the tuned model's own answers.
- :mod:`.merge`, :mod:`.compare`, :mod:`.style_eval`: the commands.
"""
