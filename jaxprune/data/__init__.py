"""Records, prompts and datasets: what flows between pipeline stages."""
