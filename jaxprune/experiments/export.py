"""Converts a model (packaged default, GGUF file, HF directory or hub id) into a Hugging Face safetensors directory.

    python -m jaxprune.experiments.export --source=packaged:SmolLM2-135M-Instruct --output=/tmp/smollm2-hf
"""

from absl import flags, logging

from jaxprune.checkpoints import DEFAULT_MODEL, DTYPES, load_model, save_hf_model
from jaxprune.experiments import cli

_SOURCE = flags.DEFINE_string("source", DEFAULT_MODEL, "GGUF file, Hugging Face directory, hub id, or packaged:NAME.")
_OUTPUT = flags.DEFINE_string("output", None, "Directory to write the Hugging Face checkpoint into.", required=True)
_DTYPE = flags.DEFINE_enum("dtype", "float32", DTYPES, "dtype of the written weights.")


def main(argv):
    del argv
    import jax.numpy as jnp

    model, tokenizer = load_model(_SOURCE.value, dtype=jnp.dtype(_DTYPE.value))
    save_hf_model(model, _OUTPUT.value, tokenizer)
    logging.info("Wrote %s (%s) to %s", _SOURCE.value, _DTYPE.value, _OUTPUT.value)


if __name__ == "__main__":
    cli.run(main)
