"""Chains (the prune CLI's output, or any chain JSONL / parquet) as a TFDS dataset in ArrayRecord format.

    python -m jaxprune.experiments.export_tfds --chains=outputs/pruned.jsonl --output=outputs/tfds/pruned_greedy
    python -m jaxprune.experiments.distill --chains=tfds:outputs/tfds/pruned_greedy --keep_ratio=0.7 ...

--output is `<data_dir>/<name>` (gs:// works with the gcs extra): the dataset goes to `<data_dir>/<name>/1.0.0/`, one
feature per record field, records in the file's order; `tfds.data_source("<name>", data_dir="<data_dir>",
split="train")` reads it without TensorFlow. An existing dataset is not overwritten. Needs the `tfds` extra. The work
itself is `jaxprune.data.tfds_chains.export_chains`.
"""

from absl import flags

from jaxprune.experiments import cli

_CHAINS = flags.DEFINE_string("chains", None, "Chains to export (JSONL or parquet).", required=True)
_OUTPUT = flags.DEFINE_string("output", None, "The dataset: <data_dir>/<name>, the name lower case letters, digits "
                              "and _.", required=True)


def main(argv):
    del argv
    from jaxprune.data.tfds_chains import export_chains

    spec = export_chains(_CHAINS.value, _OUTPUT.value)
    print(f"wrote {spec}; train on it with --chains={spec}")


if __name__ == "__main__":
    cli.run(main)
