"""Study locations: paths and URLs parsed into one storage layer, and a study at a memory://
URL (fsspec's in-process store, through zarr's FsspecStore) equal to the local one.

The S3 server cases are in tests/test_object_store.py."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import memjax as mj
from memjax.study import StudyConfig, locate, open_store, run_study, verify_study

SMALL = {
    "name": "small",
    "dataset": {"name": "longtail", "n_train": 200, "n_test": 50, "seed": 0},
    "model": {"type": "MLP", "widths": [16]},
    "subsets": {"replicas": 6, "ratio": 0.5, "design": "balanced"},
    "train": {"epochs": 2, "batch_size": 64, "optimizer": "adam", "learning_rate": 0.01},
    "seed": 1,
    "chunk_size": 2,
}


@pytest.mark.parametrize(
    ("given", "protocol", "root", "local"),
    [
        ("results/s", "", "results/s", True),
        ("/abs/s", "", "/abs/s", True),
        ("file:///abs/s", "", "/abs/s", True),
        ("s3://bucket/a/s/", "s3", "bucket/a/s", False),
        ("gcs://bucket/s", "gs", "bucket/s", False),
        ("memory://x/s", "memory", "/x/s", False),
    ],
)
def test_locate_parses_paths_and_urls(given, protocol, root, local):
    loc = locate(given)
    assert (loc.protocol, loc.root, loc.local) == (protocol, root, local)
    joined = loc.path("done/chunk-000001")
    assert joined == f"{root}/done/chunk-000001"


@pytest.mark.parametrize(
    "given",
    ["s3://bucket/study", "s3://bucket//study", "S3://bucket/study/", "s3://bucket///study//"],
)
def test_urls_are_normalized_once(given):
    """Empty segments, trailing slashes and the scheme's case make no other study: the
    object store lists normalized keys, so markers written below ``bucket//study`` were
    never found again."""
    loc = locate(given)
    assert (loc.url, loc.protocol, loc.root) == ("s3://bucket/study", "s3", "bucket/study")
    assert loc.show("done") == "s3://bucket/study/done"
    assert locate("memory://x//s/").root == "/x/s"
    assert locate("GCS://b//s").url == "gcs://b/s"


@pytest.mark.parametrize(
    ("bucket", "why"),
    [
        ("My_Bucket", "lowercase letters"),
        ("ab", "3-63"),
        ("a" * 64, "3-63"),
        ("-bucket", "at each end"),
        ("my..bucket", "adjacent dots"),
        ("192.168.1.1", "IP address"),
        ("xn--bucket", "reserved"),
    ],
)
def test_an_invalid_bucket_name_is_reported_as_invalid(bucket, why):
    with pytest.raises(ValueError, match="invalid S3 bucket name") as err:
        locate(f"s3://{bucket}/study")
    assert why in str(err.value) and f"s3://{bucket}/study" in str(err.value)


def test_the_cli_names_an_invalid_bucket_in_one_line(capsys):
    from memjax.cli import main

    assert main(["status", "s3://Bad_Bucket/study"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "invalid S3 bucket name 'Bad_Bucket'" in err


def test_file_url_is_the_local_directory(tmp_path):
    loc = locate(f"file://{tmp_path}")
    loc.write_text("done/chunk-000000", "{}")
    assert (tmp_path / "done" / "chunk-000000").read_text() == "{}"
    assert loc.listdir("done") == ["chunk-000000"] and loc.files("done") == {"done/chunk-000000"}
    loc.remove("done/chunk-000000")
    assert loc.listdir("done") == [] and not loc.exists("done/chunk-000000")


@pytest.mark.slow
def test_study_at_a_memory_url_resumes_to_the_local_bytes(tmp_path):
    cfg = StudyConfig.from_dict(SMALL)
    local = tmp_path / "s"
    run_study(cfg, str(local), progress=False)
    url = f"memory://memjax-test-{tmp_path.name}/s"
    partial = run_study(cfg, url, progress=False, max_chunks=1)
    assert partial.done_chunks() == [0] and not partial.is_complete()
    resumed = run_study(cfg, url, progress=False)
    assert resumed.done_chunks() == [0, 1, 2]
    assert verify_study(open_store(url)).ok

    mem = zarr.open_group(locate(url).zarr_store("arrays.zarr", read_only=True), mode="r")
    ref = zarr.open_group(str(local / "arrays.zarr"), mode="r")
    assert sorted(mem.array_keys()) == sorted(ref.array_keys())
    for name in ref.array_keys():
        np.testing.assert_array_equal(mem[name][:], ref[name][:], err_msg=name)
    for k in range(3):
        marker = locate(url).read_text(f"done/chunk-{k:06d}")
        assert marker == (local / "done" / f"chunk-{k:06d}").read_text()
    study = mj.open_study(url)
    np.testing.assert_array_equal(
        study.outputs.train_margin, mj.open_study(str(local)).outputs.train_margin
    )
    locate(url).remove_tree()
