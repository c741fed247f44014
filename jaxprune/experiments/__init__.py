"""Command-line entry points (absl flags); each `main` is thin, the logic lives in the library."""
