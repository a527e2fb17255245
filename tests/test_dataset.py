from __future__ import annotations

import json
import os

import polars as pl
import pytest
from click.testing import CliRunner

import data.dataset as dataset_mod
from data.dataset import DatasetDir, DatasetError, DatasetIntegrityError
from data.io import write_parquet
from data.validate import load_dataset, validate_dataset
from pipelines.cli import cli


def _edit_in_place(dd: DatasetDir) -> None:
    """What a careless notebook does: rewrite a table, leave manifest.json alone."""
    df = pl.read_parquet(dd.table_path("interactions"))
    write_parquet(df.with_columns(pl.lit("purchase").alias("event")), dd.table_path("interactions"))


def test_table_edited_in_place_is_refused(make_dataset):
    dd = make_dataset()
    load_dataset(dd.root)
    _edit_in_place(dd)
    with pytest.raises(DatasetIntegrityError) as err:
        load_dataset(dd.root)
    msg = str(err.value)
    assert "interactions.parquet" in msg and "manifest.json" in msg
    assert "re-import" in msg and "re-generate" in msg and "\n" not in msg
    assert isinstance(err.value, DatasetError)


def test_cli_refuses_an_edited_table_in_one_line(make_dataset):
    dd = make_dataset()
    _edit_in_place(dd)
    result = CliRunner().invoke(cli, ["data", "validate", str(dd.root)])
    assert result.exit_code != 0
    assert "interactions.parquet" in result.output and "Traceback" not in result.output


def test_table_not_in_the_manifest_is_refused(make_dataset):
    dd = make_dataset()
    obj = json.loads(dd.manifest_path.read_text())
    del obj["content_sha256"]["reviews"]
    dd.manifest_path.write_text(json.dumps(obj))
    with pytest.raises(DatasetIntegrityError, match=r"reviews\.parquet.*not recorded in .*manifest\.json"):
        validate_dataset(dd.root)


def test_verified_hashes_are_cached_by_size_and_mtime(make_dataset, monkeypatch):
    dd = make_dataset()
    hashed: list[str] = []
    real = dataset_mod.sha256_file
    monkeypatch.setattr(dataset_mod, "sha256_file", lambda p: hashed.append(os.path.basename(p)) or real(p))
    load_dataset(dd.root)
    assert (dd.root / ".verified.json").is_file()
    hashed.clear()
    load_dataset(dd.root)
    assert hashed == []  # nothing changed: nothing hashed again
    st = os.stat(dd.table_path("users"))
    os.utime(dd.table_path("users"), ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    ds = load_dataset(dd.root)  # touched, same content: hashed once more, still accepted
    assert hashed == ["users.parquet"]
    assert ds.report.tables["users"].quarantined == 0


def test_write_manifest_after_a_legitimate_rewrite(make_dataset):
    dd = make_dataset()
    before = load_dataset(dd.root).manifest.fingerprint
    dd.write_table("interactions", dd.read_raw("interactions").head(3))
    dd.write_manifest("fixture", "test")
    ds = load_dataset(dd.root)
    assert ds.interactions.height == 3 and ds.manifest.fingerprint != before


def test_generate_regenerates_when_a_table_was_edited(tiny_stylemart, tmp_path):
    import shutil

    from data.stylemart import generate

    root = tmp_path / "copy"
    shutil.copytree(tiny_stylemart, root)
    before = DatasetDir(root).manifest()
    _edit_in_place(DatasetDir(root))
    again = generate(root, "tiny", seed=3, workers=1)  # same parameters, but the tables no longer match
    assert again.content_sha256 == before.content_sha256
    load_dataset(root)


def test_truncated_manifest_is_a_dataset_error(make_dataset):
    dd = make_dataset()
    text = dd.manifest_path.read_text()
    dd.manifest_path.write_text(text[: len(text) // 2])
    with pytest.raises(DatasetError, match=r"manifest\.json: not valid JSON"):
        load_dataset(dd.root)
    result = CliRunner().invoke(cli, ["data", "validate", str(dd.root)])
    assert result.exit_code != 0 and "manifest.json" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("field", ["name", "source", "content_sha256"])
def test_manifest_without_a_field_is_a_dataset_error(make_dataset, field):
    dd = make_dataset()
    obj = json.loads(dd.manifest_path.read_text())
    del obj[field]
    dd.manifest_path.write_text(json.dumps(obj))
    with pytest.raises(DatasetError, match=rf"manifest\.json: .*{field!r}"):
        dd.manifest()


def test_manifest_that_is_not_an_object_is_a_dataset_error(make_dataset):
    dd = make_dataset()
    dd.manifest_path.write_text("[1, 2]")
    with pytest.raises(DatasetError, match=r"manifest\.json: expected a JSON object"):
        dd.manifest()
