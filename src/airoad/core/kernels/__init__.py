"""Fast paths with their plain twins: the chunked head loss, token log-probs, fused LoRA/DoRA layers, lean layers. Import no other room."""
