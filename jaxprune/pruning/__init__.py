"""Greedy pruning of reasoning tokens: the scoring kernel, the greedy loop, the pruning methods and the dataset runner."""
