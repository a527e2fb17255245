"""The MovieLens-100K importer: the mapping on a hand-written ml-100k sample (folder and
wheel-like zip), then one test on the real recbole wheel."""

from __future__ import annotations

import datetime as dt
import os
import re
import zipfile
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from data.adapters.movielens import WHEEL_DIR, import_movielens
from data.dataset import DatasetDir, DatasetError
from data.io import sha256_file
from data.validate import load_dataset, validate_dataset
from pipelines.cli import cli

ROOT = Path(__file__).resolve().parents[1]
WHEEL_ENV = "STYLEREC_MOVIELENS_WHEEL"
DEFAULT_WHEEL = ROOT / ".venv" / "wheels" / "recbole-1.2.1-py3-none-any.whl"

# RecBole's atomic files: tab-separated, typed headers. Item 3's year is RecBole's
# "unkonwn" and item 4's is not a year either: both fall back to the first rating - 1 day.
INTER = """user_id:token\titem_id:token\trating:float\ttimestamp:float
1\t1\t5\t881250949
1\t2\t3\t881250950
2\t1\t4\t881251000
2\t3\t1\t874724710
3\t4\t2\t891717742
3\t2\t4.0\t891717743
"""
ITEM = """item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq
1\tToy Story\t1995\tAnimation Children's Comedy
2\tGoldenEye\t1995\tAction Adventure Thriller
3\tunkonwn\tunkonwn\tunknown
4\tLand Before Time III: The Time of the Great Giving (1995)\tV\tAnimation Children's
"""
USER = """user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token
1\t24\tM\ttechnician\t85711
2\t53\tF\tother\t94043
3\t33\tM\twriter\tT8H1N
"""
SAMPLE = {"inter": INTER, "item": ITEM, "user": USER}
FIRST_RATING = dt.datetime.fromtimestamp(874724710, dt.UTC)


def _run(*args):
    return CliRunner().invoke(cli, ["data", *map(str, args)])


def _one_line_error(result, pattern: str) -> None:
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert re.fullmatch(rf"Error: .*{pattern}.*\n", result.output), result.output


@pytest.fixture
def ml_folder(tmp_path):
    src = tmp_path / "ml-100k"
    src.mkdir()
    for kind, text in SAMPLE.items():
        (src / f"ml-100k.{kind}").write_text(text)
    return src


@pytest.fixture
def ml_wheel(tmp_path):
    """A zip laid out like the recbole wheel (the files under recbole/dataset_example/ml-100k/)."""
    path = tmp_path / "recbole-0.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("recbole/__init__.py", "")
        for kind, text in SAMPLE.items():
            zf.writestr(f"{WHEEL_DIR}/ml-100k.{kind}", text)
    return path


def test_mapping_of_the_sample(ml_folder, tmp_path):
    manifest, report = import_movielens(ml_folder, tmp_path / "out")
    assert (report.items, report.users, report.ratings, report.purchases, report.views, report.items_without_year) == (4, 3, 6, 3, 3, 2)
    ds = validate_dataset(tmp_path / "out")
    assert {t: r.quarantined for t, r in ds.report.tables.items()} == dict.fromkeys(("items", "users", "interactions", "reviews"), 0)

    # every rating is an event at its time; rating >= 4 -> purchase (4.0 too), else view
    inter = ds.interactions.sort("user_id", "item_id")
    assert inter.select("user_id", "item_id", "event", "rating").rows() == [
        ("1", "1", "purchase", 5), ("1", "2", "view", 3), ("2", "1", "purchase", 4),
        ("2", "3", "view", 1), ("3", "2", "purchase", 4), ("3", "4", "view", 2),
    ]  # fmt: skip
    assert inter["quantity"].to_list() == [1] * 6
    assert inter.filter(pl.col("item_id") == "3")["ts"].to_list() == [FIRST_RATING]

    items = {r["item_id"]: r for r in ds.items.iter_rows(named=True)}
    toy = items["1"]
    assert toy["title"] == "Toy Story" and toy["category"] == "Animation"
    assert toy["description"] == "Animation, Children's, Comedy film released in 1995"
    assert toy["genres"] == "Animation|Children's|Comedy" and toy["release_year"] == 1995
    assert toy["created_at"] == dt.datetime(1995, 1, 1, tzinfo=dt.UTC)
    assert toy["price"] is None and toy["image_path"] is None
    # no usable release year: created_at = the earliest rating - 1 day; the text has no year
    for iid in ("3", "4"):
        assert items[iid]["release_year"] is None
        assert items[iid]["created_at"] == FIRST_RATING - dt.timedelta(days=1)
    assert items["4"]["description"] == "Animation, Children's film" and items["4"]["category"] == "Animation"
    assert items["3"]["category"] == "unknown"

    users = ds.users.sort("user_id")
    assert users.columns == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert users.row(2) == ("3", 33, "M", "writer", "T8H1N")
    assert users.schema["age"] == pl.Int64
    assert ds.reviews.height == 0

    assert manifest.source == "movielens-100k"
    assert manifest.params["purchase_threshold"] == 4
    assert manifest.extra["source_file"]["kind"] == "folder"
    assert manifest.extra["source_file"]["ml-100k.inter_sha256"] == sha256_file(ml_folder / "ml-100k.inter")


def test_purchase_threshold_is_a_parameter(ml_folder, tmp_path):
    result = _run("import-movielens", ml_folder, tmp_path / "out", "--purchase-threshold", "5")
    assert result.exit_code == 0, result.output
    assert "1 purchase + 5 view events" in result.output
    assert DatasetDir(tmp_path / "out").manifest().params["purchase_threshold"] == 5
    assert _run("import-movielens", ml_folder, tmp_path / "out", "--purchase-threshold", "6").exit_code == 2


def test_cli_reads_the_wheel_in_place_then_validate_split_summary(ml_wheel, tmp_path):
    out = tmp_path / "out"
    result = _run("import-movielens", ml_wheel, out)
    assert result.exit_code == 0, result.output
    assert "4 items (2 without a release year), 3 users, 6 ratings -> 3 purchase + 3 view events" in result.output
    assert "no images, so no style embeddings" in result.output
    source = DatasetDir(out).manifest().extra["source_file"]
    assert source == {"kind": "wheel", "file": ml_wheel.name, "sha256": sha256_file(ml_wheel), "member_dir": WHEEL_DIR}

    result = _run("validate", out)
    assert result.exit_code == 0, result.output
    for table, rows in (("items", 4), ("users", 3), ("interactions", 6), ("reviews", 0)):
        assert re.search(rf"^{table}\s+{rows}\s+{rows}\s+0\s+-$", result.output, re.M), result.output
    result = _run("split", out, "--test-fraction", "0.3", "--val-days", "1")
    assert result.exit_code == 0, result.output
    assert (out / "split" / "split.json").is_file()
    result = _run("summary", out)
    assert result.exit_code == 0, result.output
    assert "purchase=3, view=3" in result.output and "split (temporal)" in result.output


def test_the_pre_2000_timestamps_pass_only_with_the_manifest_floor(ml_folder, tmp_path):
    out = tmp_path / "out"
    manifest, _ = import_movielens(ml_folder, out)
    assert load_dataset(out).report.tables["interactions"].quarantined == 0
    dd = DatasetDir(out)
    dd.write_manifest(manifest.name, manifest.source, manifest.params)  # the same tables without min_ts
    report = validate_dataset(out).report
    assert report.tables["items"].reasons == {"timestamp_out_of_range": 4}
    assert report.tables["interactions"].reasons == {"unknown_item": 6}
    # a later floor does not raise the default one; a floor that is not a time is an error
    dd.write_manifest(manifest.name, manifest.source, manifest.params, extra={"min_ts": "2020-01-01T00:00:00+00:00"})
    assert validate_dataset(out).report.config["min_ts"] == "2000-01-01T00:00:00+00:00"
    dd.write_manifest(manifest.name, manifest.source, manifest.params, extra={"min_ts": "long ago"})
    with pytest.raises(DatasetError, match="manifest.json: 'min_ts' 'long ago' is not an ISO 8601 time"):
        validate_dataset(out)


@pytest.mark.parametrize(
    ("make_src", "message"),
    [
        (lambda p: _text(p / "notes.txt", "hello"), "neither a folder nor a wheel/zip file"),
        (lambda p: p / "ml-100k-empty", "missing ml-100k.inter"),
        (lambda p: _zip(p / "other.whl", {"pkg/ml-100k.user": USER}), "lacks recbole/dataset_example/ml-100k/ml-100k.inter"),
        (lambda p: _zip(p / "partial.whl", {f"{WHEEL_DIR}/ml-100k.inter": INTER}), r"lacks recbole/dataset_example/ml-100k/ml-100k.item"),
        (lambda p: _corrupt(_zip(p / "crc.whl", {f"{WHEEL_DIR}/ml-100k.{k}": t for k, t in SAMPLE.items()})), "cannot read the archive: Bad CRC-32"),
        (lambda p: _folder(p / "nocol", item=ITEM.replace("class:token_seq", "genre:token_seq")), r"ml-100k.item lacks column\(s\) \['class'\]"),
        (lambda p: _folder(p / "badrating", inter=INTER.replace("\t3\t881250950", "\tthree\t881250950")), "'rating' has 1 value"),
    ],
    ids=["not-a-zip", "empty-folder", "zip-without-files", "zip-missing-item", "corrupt-member", "missing-column", "bad-rating"],
)
def test_cli_one_line_error_for_a_bad_src(tmp_path, make_src, message):
    (tmp_path / "ml-100k-empty").mkdir()
    src = make_src(tmp_path)
    _one_line_error(_run("import-movielens", src, tmp_path / "out"), message)
    assert not (tmp_path / "out").exists()  # nothing written


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def _corrupt(path: Path) -> Path:
    """A member's bytes changed after the zip was written (its CRC no longer matches)."""
    path.write_bytes(path.read_bytes().replace(b"881250949", b"881250948"))
    return path


def _folder(path: Path, **texts: str) -> Path:
    path.mkdir()
    for kind, text in (SAMPLE | texts).items():
        (path / f"ml-100k.{kind}").write_text(text)
    return path


def test_reimport_overwrites_consistently(ml_folder, ml_wheel, tmp_path):
    out = tmp_path / "out"
    first, _ = import_movielens(ml_folder, out)
    load_dataset(out)  # caches the verified hashes, writes the report
    assert _run("split", out, "--test-fraction", "0.3", "--val-days", "1").exit_code == 0
    # the same data from the wheel: the same tables
    again, _ = import_movielens(ml_wheel, out)
    assert again.content_sha256 == first.content_sha256 and again.fingerprint == first.fingerprint
    assert again.extra["source_file"]["kind"] == "wheel"
    # another threshold: other interactions, verified afresh; the old split is refused, not reused
    third, _ = import_movielens(ml_folder, out, purchase_threshold=2)
    assert third.fingerprint != first.fingerprint
    ds = load_dataset(out)
    assert ds.interactions.filter(pl.col("event") == "purchase").height == 5
    assert sum(r.quarantined for r in ds.report.tables.values()) == 0
    assert _run("summary", out).exit_code == 1


def test_import_refuses_a_folder_in_use(ml_folder, tmp_path):
    from data.io import folder_lock

    with folder_lock(tmp_path / "out", what="another import"):
        _one_line_error(_run("import-movielens", ml_folder, tmp_path / "out"), "in use by PID")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_the_real_recbole_wheel(tmp_path):
    """Rows in = rows out on MovieLens-100K itself, read from the pinned recbole wheel."""
    wheel = Path(os.environ.get(WHEEL_ENV) or DEFAULT_WHEEL)
    if not wheel.is_file():
        pytest.fail(
            f"the recbole 1.2.1 wheel (MovieLens-100K) is not at {wheel}: run `make venv`, or "
            f"`python -m pip download --no-deps --require-hashes -r requirements/movielens.txt -d {DEFAULT_WHEEL.parent}`, "
            f"or set {WHEEL_ENV} to the wheel's path"
        )
    pinned = re.search(r"--hash=sha256:([0-9a-f]{64})", (ROOT / "requirements" / "movielens.txt").read_text()).group(1)
    assert sha256_file(wheel) == pinned, f"{wheel} is not the wheel requirements/movielens.txt pins"
    manifest, report = import_movielens(wheel, tmp_path / "ml")
    assert manifest.row_counts == {"items": 1682, "users": 943, "interactions": 100_000, "reviews": 0}
    assert manifest.extra["source_file"]["sha256"] == pinned and manifest.extra["source_file"]["file"] == wheel.name
    assert (report.purchases, report.views, report.items_without_year) == (55_375, 44_625, 2)
    ds = validate_dataset(tmp_path / "ml")
    for rep in ds.report.tables.values():
        assert rep.reconciled and rep.quarantined == 0, rep
    assert ds.report.tables["items"].notes["items_without_image"] == 1682
    assert ds.interactions.group_by("user_id", "item_id").len()["len"].max() == 1
    assert ds.items["category"].n_unique() == 19 and ds.items["created_at"].null_count() == 0


def test_data_help_lists_the_importer():
    assert "import-movielens" in CliRunner().invoke(cli, ["data", "--help"]).output


def test_a_model_without_style_is_served_on_a_catalogue_without_images(tmp_path):
    """An id-only two-tower trained on MovieLens (no images, so no style embeddings) loads
    back for serving: the bundle asks for style vectors only if its towers read them."""
    from data.split import SplitConfig, split_dataset
    from recsys.bundle import save_bundle
    from recsys.config import load_run_config
    from recsys.serving import load_model
    from recsys.train import Trainer, TrainConfig
    from recsys.training_run import features_for

    wheel = Path(os.environ.get(WHEEL_ENV) or DEFAULT_WHEEL)
    import_movielens(wheel, tmp_path / "ml")
    ds = validate_dataset(tmp_path / "ml")
    split_dataset(ds, SplitConfig(test_fraction=0.15, val_days=7))
    config = load_run_config(ROOT / "recsys" / "configs" / "two_tower_id_only.toml")
    assert not config.model.uses_style
    fs = features_for(ds, config)
    result = Trainer(fs, config.model, TrainConfig(epochs=1, max_batches_per_epoch=3, val_users=50, refit=False), progress=False).fit()
    folder = save_bundle(tmp_path / "bundle", result.model, result.features, ("train",), tables_sha256=ds.manifest.content_sha256)
    served = load_model(folder, "ml-test", load_dataset(tmp_path / "ml"))
    assert not served.fs.items.has_style.any() and served.recommender.scores([0, 1], served.query_time).shape == (2, ds.items.height)
