"""Models: where a base comes from, adapter dirs, loading, adapters attached and merged, devices, generation."""
