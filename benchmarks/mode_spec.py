"""The benchmarks' way to name a pruning mode with its settings: `method[:setting=value,...]`, e.g.
`approx:suffix_limit=32` (settings of `jaxprune.pruning.methods`)."""


def parse_mode(spec: str) -> tuple[str, dict]:
    """`"lazy:top_k=8,window=2"` -> `("lazy", {"top_k": 8, "window": 2})`; integer-looking values become ints."""
    name, _, rest = spec.partition(":")
    settings = {}
    for pair in filter(None, rest.split(",")):
        key, value = pair.split("=")
        settings[key] = int(value) if value.lstrip("-").isdigit() else value
    return name, settings
