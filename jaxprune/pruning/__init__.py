"""Greedy pruning of reasoning tokens: the scoring kernel, the greedy loop, baselines and the dataset runner."""
