"""Chains as a TFDS dataset in ArrayRecord format, written and read without TensorFlow (the `tfds` extra).

    python -m jaxprune.experiments.export_tfds --chains=pruned.jsonl --output=outputs/tfds/pruned_greedy
    python -m jaxprune.experiments.distill --chains=tfds:outputs/tfds/pruned_greedy ...

`export_chains` builds `<data_dir>/<name>/1.0.0/` with one `train` split, written unshuffled: record i is the JSONL's
i-th chain, so the distill CLI's seeded order picks the same chains from either. `TfdsChains` reads it through
`tfds.data_source` (random access; nothing is loaded whole) as `(where, record)` pairs like `read_chains` gives.

Each record field is one feature, its type inferred over the whole file: strings are `Text`, integers int64, booleans
bool, floats float64 stored as raw bytes (tf.Example float lists are float32, and the log-likelihoods must come back
exactly), lists of numbers 1-D tensors, and objects with the same keys in every record nested `FeaturesDict`s.
Anything else (a field some records lack, null, mixed types) is its JSON text, "" standing for "absent". The
dataset's metadata keeps this schema, so a record read back equals the JSONL line it came from.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Sequence
from typing import Any, Iterator

import numpy as np

from jaxprune.data.records import RecordError, check_fields, read_rows

PREFIX = "tfds:"  # what `--chains` starts with to read a dataset written here
VERSION = "1.0.0"
_NAME = re.compile(r"[a-z][a-z0-9_]*")   # what TFDS accepts as a dataset name (it parses name/config:version)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # feature names; a nested key that is not one makes its object JSON
_INT64 = range(-2**63, 2**63)
_LISTS = {"list": None, "int_list": np.int64, "float_list": np.float64}  # "list": only empty ones seen so far


def is_tfds(spec: str) -> bool:
    return spec.startswith(PREFIX)


def _tfds():
    try:
        import grain  # noqa: F401  (distillation streams the dataset through it)
        import tensorflow_datasets
    except ImportError as error:
        raise ImportError(f"TFDS datasets need the tfds extra: pip install 'jaxprune[tfds]' ({error})") from error
    return tensorflow_datasets


def _split(path: str) -> tuple[str, str]:
    """`(data_dir, name)` of `<data_dir>/<name>` (with or without the `tfds:` prefix; data_dir may be gs://)."""
    path = path.removeprefix(PREFIX).rstrip("/")
    data_dir, _, name = path.rpartition("/")
    if not _NAME.fullmatch(name):
        raise RecordError(f"{PREFIX}{path}: the dataset name {name!r} must be lower case letters, digits and _, "
                          "starting with a letter (TFDS's rule)")
    return data_dir or ".", name


def _kind(value: Any) -> Any:
    """One value's schema: a kind name, or for an object a dict of its fields' schemas."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if value in _INT64 else "json"
    if isinstance(value, (float, str)):
        return "float" if isinstance(value, float) else "str"
    if isinstance(value, list):
        if not value:
            return "list"
        if all(isinstance(v, int) and not isinstance(v, bool) and v in _INT64 for v in value):
            return "int_list"
        return "float_list" if all(isinstance(v, float) for v in value) else "json"
    if isinstance(value, dict) and value and all(_FIELD.fullmatch(k) for k in value):
        return {k: _kind(v) for k, v in value.items()}
    return "json"


def _merge(a: Any, b: Any) -> Any:
    """The schema two records' values both fit; `None` is a value a record lacks (the field becomes JSON)."""
    if a == b:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge(a.get(k), b.get(k)) for k in {**a, **b}}
    if isinstance(a, str) and isinstance(b, str) and {a, b} <= set(_LISTS) and "list" in (a, b):
        return a if b == "list" else b  # an empty list fits either kind of list
    return "json"


def _feature(schema: Any):
    features = _tfds().features
    if isinstance(schema, dict):
        return features.FeaturesDict({k: _feature(v) for k, v in schema.items()})
    if schema in ("str", "json"):
        return features.Text()
    if schema in ("int", "bool"):
        return features.Scalar(np.int64 if schema == "int" else np.bool_)
    if schema == "float":
        return features.Tensor(shape=(), dtype=np.float64, encoding=features.Encoding.BYTES)
    dtype = _LISTS[schema] or np.int64
    return features.Tensor(shape=(None,), dtype=dtype, encoding=features.Encoding.BYTES)


def _encode(schema: Any, value: Any, present: bool = True) -> Any:
    """A record's value as its feature takes it."""
    if isinstance(schema, dict):
        return {k: _encode(v, value.get(k), k in value) for k, v in schema.items()}
    if schema == "json":
        return json.dumps(value, ensure_ascii=False) if present else ""
    if schema in _LISTS:
        return np.asarray(value, _LISTS[schema] or np.int64)
    return value


def _decode(schema: Any, value: Any, out: dict, key: str) -> None:
    """Sets `out[key]` to the record value `value` (as `tfds.data_source` returns it) stands for, if present."""
    if isinstance(schema, dict):
        out[key] = {}
        for k, v in schema.items():
            _decode(v, value[k], out[key], k)
    elif schema in ("str", "json"):
        text = value.decode("utf-8")
        if schema == "str":
            out[key] = text
        elif text:
            out[key] = json.loads(text)
    elif schema in _LISTS:
        out[key] = value.tolist()
    else:
        out[key] = {"int": int, "bool": bool, "float": float}[schema](value)


def infer_schema(path: str) -> dict[str, Any]:
    """The schema every chain of `path` fits, after checking each as the distill CLI does: fields named by
    file:line, ids unique."""
    schema, seen = None, {}
    for where, record in read_rows(path):
        check_fields(record, where)
        for field in record:
            if not _FIELD.fullmatch(field):
                raise RecordError(f"{where}: field {field!r} cannot be a TFDS feature name (letters, digits and _)")
        key = str(record["id"])
        if key in seen:
            raise RecordError(f"{where}: field 'id'={key!r} repeats {seen[key]}")
        seen[key] = where
        schema = _kind(record) if schema is None else _merge(schema, _kind(record))
    if schema is None:
        raise RecordError(f"{path}: no chains")
    return schema


def export_chains(path: str, output: str) -> str:
    """Writes the chains of `path` (JSONL or parquet, e.g. the prune CLI's output) as the TFDS dataset `output`
    (`<data_dir>/<name>`) and returns the `--chains` value that reads it. An existing dataset is never overwritten."""
    from etils import epath

    tfds = _tfds()
    data_dir, name = _split(output)
    if name in tfds.list_builders(with_community_datasets=False):  # tfds.data_source would build TFDS's own instead
        raise RecordError(f"{output}: {name!r} is the name of a dataset TFDS ships; choose another name")
    if (epath.Path(data_dir) / name / VERSION).exists():  # (an interrupted export leaves only an incomplete.* folder)
        raise FileExistsError(f"{data_dir}/{name} already exists; remove it or choose another name")
    schema = infer_schema(path)
    with tempfile.TemporaryDirectory() as downloads:  # tfds makes a downloads folder; none is needed
        _builder(name, schema, path, data_dir).download_and_prepare(download_dir=downloads)
    return f"{PREFIX}{data_dir}/{name}"


def _builder(name: str, schema: dict[str, Any], path: str, data_dir: str):
    tfds = _tfds()

    class PrunedChains(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        """The chains of one file; a class per export, as the name and features are the file's (TFDS's own
        `AdhocBuilder` is such a class, but it cannot skip the checksums lookup below, which fails)."""

        VERSION = tfds.core.Version(VERSION)
        # No checksums file to look for beside this module; and tfds 4.9's lookup of one imports
        # importlib_resources, which Python >= 3.9 neither needs nor installs.
        code_path = None

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self, description=f"Chains of {path}, one feature per record field (jaxprune).",
                features=_feature(schema), disable_shuffling=True,  # record i is the file's i-th chain
                metadata=tfds.core.MetadataDict(schema=schema, source=path))

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for index, (_, record) in enumerate(read_rows(path)):
                yield index, _encode(schema, record)

    PrunedChains.name = name
    return PrunedChains(data_dir=data_dir, file_format="array_record")


class TfdsChains(Sequence):
    """The chains of a dataset `export_chains` wrote, as `(where, record)` pairs read on demand (`where` is
    `tfds:<data_dir>/<name>[i]`); random access, so grain can read any process's share of any batch."""

    def __init__(self, spec: str):
        from etils import epath

        tfds = _tfds()
        data_dir, name = _split(spec)
        self.spec = f"{PREFIX}{data_dir}/{name}"
        if not list(epath.Path(data_dir, name).glob("*/dataset_info.json")):
            raise RecordError(f"{self.spec}: no TFDS dataset there (python -m jaxprune.experiments.export_tfds "
                              "writes one)")
        self._source = tfds.data_source(name, split="train", data_dir=data_dir, download=False)
        self._schema = self._source.dataset_info.metadata.get("schema")
        if self._schema is None:
            raise RecordError(f"{self.spec}: not written by jaxprune (its metadata has no 'schema')")
        self._name = name

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> tuple[str, dict[str, Any]]:
        return self._chain(int(index), self._source[index])

    def __iter__(self) -> Iterator[tuple[str, dict[str, Any]]]:
        for start in range(0, len(self), 256):  # a few hundred per read: one ArrayRecord call, not one each
            indices = range(start, min(start + 256, len(self)))
            for index, value in zip(indices, self._source.__getitems__(indices)):
                yield self._chain(index, value)

    def _chain(self, index: int, value: dict) -> tuple[str, dict[str, Any]]:
        out: dict[str, Any] = {}
        _decode(self._schema, value, out, "record")
        return f"{self.spec}[{index}]", out["record"]

    def __repr__(self) -> str:
        # grain checks a resumed loader's source by its repr: name and size, not path, so a copy resumes too
        return f"TfdsChains(name={self._name!r}, records={len(self)})"
