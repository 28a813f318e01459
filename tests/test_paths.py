"""io.paths: local paths and fsspec URLs become UPaths; unusable schemes are one-line errors."""

from __future__ import annotations

import importlib.util

import pytest

from specdiff_catalog.io.paths import PathError, is_local, to_upath


def test_local_paths_and_file_urls_are_local(tmp_path):
    assert is_local(tmp_path) and is_local(f"file://{tmp_path}")
    assert to_upath(tmp_path / "x.zarr").name == "x.zarr"


def test_memory_url_round_trips_bytes():
    path = to_upath("memory://specdiff-test/a.txt")
    path.write_text("abc")
    assert to_upath("memory://specdiff-test/a.txt").read_text() == "abc"
    assert not is_local(path)


def test_unknown_scheme_is_one_line_error():
    with pytest.raises(PathError, match=r"unknown URL scheme 'nosuch'") as err:
        to_upath("nosuch://bucket/pz.zarr")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed here")
def test_missing_filesystem_package_is_named():
    with pytest.raises(PathError, match=r"s3://.*not installed.*s3fs"):
        to_upath("s3://bucket/pz.zarr", {"anon": True})
