"""Student distillation on pruned chains (SPEC section 5)."""
