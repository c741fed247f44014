"""Outputs through `etils.epath`: the same writers and readers on local paths and on `gs://` paths.

`gs://` is simulated with `etils.epath.testing.mock_epath`: every epath call on `gs://bucket/...` is redirected into
a local folder, and appending to an object is refused as GCS refuses it. The tests run in an empty working folder and
check that no `gs:` folder appears in it: a writer that bypassed epath (`open`, `os.makedirs`) would create one.
"""

import json
import os

import pytest
from etils.epath import testing

from jaxprune import files
from jaxprune.data.records import JsonlAppender, RecordError, read_jsonl, write_jsonl_atomic, write_text_atomic


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """A fake GCS: `gs://bucket/x` lives at `<tmp>/gcs/bucket/x`; yields the bucket's folder."""
    root = tmp_path / "gcs"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)

    def local(path):
        path = os.fspath(path)
        return str(root / path[len("gs://"):]) if path.startswith("gs://") else path

    def one(original, path, *args, **kwargs):
        return original(local(path), *args, **kwargs)

    def two(original, path, dst, *args, **kwargs):
        if os.fspath(dst).startswith("gs://"):  # objects need no folder
            os.makedirs(os.path.dirname(local(dst)), exist_ok=True)
        return original(local(path), local(dst), *args, **kwargs)

    def open_object(original, path, mode):
        if os.fspath(path).startswith("gs://"):
            if "a" in mode:
                raise OSError("GCS objects cannot be appended to")
            if "w" in mode:  # objects need no folder
                os.makedirs(os.path.dirname(local(path)), exist_ok=True)
        return original(local(path), mode)

    def glob(original, pattern):
        if not os.fspath(pattern).startswith("gs://"):
            return original(pattern)
        return ["gs://" + os.path.relpath(p, root) for p in original(local(pattern))]

    with testing.mock_epath(open=open_object, exists=one, isdir=one, makedirs=one, mkdir=one, remove=one,
                            listdir=one, stat=one, rmtree=one, walk=one, replace=two, rename=two, copy=two,
                            glob=glob):
        yield root / "bucket"
    assert not (workdir / "gs:").exists(), "something wrote a gs:// path through the local file system"


@pytest.fixture(params=["local", "gcs"])
def place(request, tmp_path):
    """Where outputs go: a local folder, or a fake bucket (the same tests run on both)."""
    if request.param == "local":
        return str(tmp_path / "out")
    request.getfixturevalue("bucket")
    return "gs://bucket/out"


def test_a_gcs_path_lands_in_the_fake_bucket_and_reads_back(bucket):
    with JsonlAppender("gs://bucket/runs/x.jsonl") as appender:
        appender.append({"id": 1, "text": "é"})
    assert (bucket / "runs" / "x.jsonl").read_text(encoding="utf-8") == '{"id": 1, "text": "é"}\n'
    assert list(read_jsonl("gs://bucket/runs/x.jsonl")) == [(1, {"id": 1, "text": "é"})]


def test_appended_records_read_back_and_a_reopened_file_resumes_with_their_ids(place):
    path = f"{place}/chains.jsonl"
    with JsonlAppender(path) as appender:
        appender.append({"id": "a", "n": 1})
        appender.append({"id": 2, "n": 2})
    with JsonlAppender(path) as appender:
        assert appender.done_ids == {"a", "2"}
        appender.append({"id": "c", "n": 3})
    assert [record["n"] for _, record in read_jsonl(path)] == [1, 2, 3]


def test_records_without_an_id_such_as_training_metrics_are_appended_and_kept(place):
    path = f"{place}/metrics.jsonl"
    with JsonlAppender(path) as appender:
        appender.append({"step": 1, "loss": 2.5})
    with JsonlAppender(path) as appender:
        assert appender.done_ids == set()
        appender.append({"step": 2, "loss": 2.0})
    assert [record["step"] for _, record in read_jsonl(path)] == [1, 2]


def test_the_check_sees_every_record_already_there_with_its_file_and_line(place):
    path = f"{place}/chains.jsonl"
    with JsonlAppender(path) as appender:
        appender.append({"id": 1, "method": "uniform"})

    def check(record, where):
        raise RecordError(f"{where}: field 'method'={record['method']!r}")

    with pytest.raises(RecordError, match=f"^{path}:1: field 'method'='uniform'$"):
        JsonlAppender(path, check)


def test_a_torn_last_line_is_cut_off_on_reopening(place):
    path = f"{place}/chains.jsonl"
    write_text_atomic(path, '{"id": 1}\n{"id": 2, "trunc')
    with JsonlAppender(path) as appender:
        assert appender.done_ids == {"1"}
        appender.append({"id": 3})
    assert [record["id"] for _, record in read_jsonl(path)] == [1, 3]


def test_a_gcs_appender_uploads_the_first_record_then_in_batches_and_on_close(bucket):
    object_file = bucket / "x.jsonl"
    appender = JsonlAppender("gs://bucket/x.jsonl", upload_every_s=3600)
    appender.append({"id": 1})
    assert object_file.read_text().count("\n") == 1  # at once: a bucket that cannot be written fails early
    appender.append({"id": 2})
    assert object_file.read_text().count("\n") == 1  # batched: GCS objects are rewritten whole
    appender.close()
    assert object_file.read_text().count("\n") == 2


def test_whole_file_writes_replace_the_file_and_leave_no_temporary(place):
    write_jsonl_atomic(f"{place}/sub/all.jsonl", ({"id": i} for i in range(3)))
    write_jsonl_atomic(f"{place}/sub/all.jsonl", [{"id": "new"}])
    write_text_atomic(f"{place}/summary.json", json.dumps({"accuracy": 0.5}))
    assert [record for _, record in read_jsonl(f"{place}/sub/all.jsonl")] == [{"id": "new"}]
    assert json.loads(files.read_text(f"{place}/summary.json")) == {"accuracy": 0.5}
    assert not files.exists(f"{place}/sub/all.jsonl.tmp") and not files.exists(f"{place}/summary.json.tmp")


def test_a_figure_is_written_as_png_through_epath(place):
    from etils import epath

    from jaxprune.plotting import pyplot, save_figure

    figure, axes = pyplot().subplots()
    axes.plot([0, 1], [1, 0])
    save_figure(figure, f"{place}/plot.png")
    assert epath.Path(f"{place}/plot.png").read_bytes().startswith(b"\x89PNG")


def test_glob_finds_summaries_in_a_folder(place):
    for name in ("a.summary.json", "b.summary.json", "b.jsonl"):
        write_text_atomic(f"{place}/eval/{name}", "{}")
    assert sorted(os.path.basename(p) for p in files.glob(f"{place}/eval/*.summary.json")) == [
        "a.summary.json", "b.summary.json"]
    assert files.glob(f"{place}/eval/b.jsonl") == [f"{place}/eval/b.jsonl"]


def test_a_missing_gcs_file_is_named_as_a_missing_local_one_is(place):
    with pytest.raises(RecordError, match=f"^{place}/none.jsonl: no such file$"):
        list(read_jsonl(f"{place}/none.jsonl"))


def test_gcs_paths_stay_as_they_are_and_local_ones_become_absolute():
    assert files.absolute("gs://bucket/run/checkpoints") == "gs://bucket/run/checkpoints"
    assert files.absolute("run/checkpoints") == os.path.join(os.getcwd(), "run", "checkpoints")
    assert not files.is_local("gs://bucket/x") and files.is_local("/tmp/x") and files.is_local("x.jsonl")


def test_an_output_under_a_regular_file_names_the_file_in_the_way(tmp_path):
    (tmp_path / "plain").write_text("")
    with pytest.raises(NotADirectoryError, match="so .*plain/x.jsonl cannot be written there"):
        files.make_parent(str(tmp_path / "plain" / "x.jsonl"))


def test_a_student_exported_to_a_bucket_loads_back_from_it_with_the_same_logits(bucket, tmp_path, monkeypatch):
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from jaxprune.checkpoints import load_model, save_hf_model
    from jaxprune.models import Llama, ModelConfig, causal_mask, positions_from_keep

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the local copy of a gs:// model goes under ~/.cache
    config = ModelConfig(model_type="llama", vocab_size=40, hidden_size=16, intermediate_size=24, num_layers=1,
                         num_heads=2, num_kv_heads=1, head_dim=8)
    model = Llama(config, rngs=nnx.Rngs(0))
    save_hf_model(model, "gs://bucket/student")
    assert (bucket / "student" / "model.safetensors").is_file() and (bucket / "student" / "config.json").is_file()
    loaded, tokenizer = load_model("gs://bucket/student")
    ids = jnp.arange(7)[None] % 40
    keep = jnp.ones(ids.shape, bool)
    np.testing.assert_array_equal(loaded(ids, positions_from_keep(keep), causal_mask(keep)).logits,
                                  model(ids, positions_from_keep(keep), causal_mask(keep)).logits)
    assert tokenizer is None
