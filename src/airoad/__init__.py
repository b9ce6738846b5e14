"""airoad: LoRA/DoRA fine-tuning of small chat models, with KL regularisation and the tools around a run."""

__version__ = "0.1.0"
