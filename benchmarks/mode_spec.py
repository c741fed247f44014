"""The benchmarks' way to name a pruning mode with its settings: `method[:setting=value,...]`, e.g.
`approx:suffix_limit=32` (settings of `jaxprune.pruning.methods`)."""


def parse_mode(spec: str) -> tuple[str, dict]:
    """`"lazy:top_k=8,window=2"` -> `("lazy", {"top_k": 8, "window": 2})`; numbers become ints or floats."""
    name, _, rest = spec.partition(":")
    settings = {}
    for pair in filter(None, rest.split(",")):
        key, value = pair.split("=")
        settings[key] = _number(value)
    return name, settings


def _number(value: str):
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value
