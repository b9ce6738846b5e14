"""A run: its context, the training skeleton, the run directory, callbacks, artifacts, and the command runner."""
