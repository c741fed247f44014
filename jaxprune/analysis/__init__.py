"""Looking at pruned chains: views, and (later) functional roles, attention and dynamics."""
