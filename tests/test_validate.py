from __future__ import annotations

import datetime as dt
import json
import os

import polars as pl
import pytest
from click.testing import CliRunner

from data.dataset import DatasetError
from data.validate import SchemaError, ValidationConfig, load_dataset, validate_dataset
from pipelines.cli import cli
from tests.conftest import _ts, write_image


def test_clean_dataset_accepts_everything(make_dataset):
    ds = validate_dataset(make_dataset().root)
    for rep in ds.report.tables.values():
        assert rep.quarantined == 0 and rep.accepted == rep.rows_in > 0
    assert (ds.dir.root / "validation_report.json").is_file()
    assert ds.interactions.schema["ts"] == pl.Datetime("us", "UTC")


def test_missing_table_names_the_file(make_dataset):
    dd = make_dataset()
    os.remove(dd.table_path("reviews"))
    with pytest.raises(SchemaError, match=r"reviews\.parquet: missing table 'reviews'"):
        validate_dataset(dd.root)


def test_missing_column_names_file_and_column(make_dataset):
    dd = make_dataset(interactions=lambda df: df.drop("quantity"))
    with pytest.raises(SchemaError, match=r"interactions\.parquet: missing column 'quantity'"):
        validate_dataset(dd.root)


def test_wrong_dtype_names_file_and_column(make_dataset):
    dd = make_dataset(items=lambda df: df.with_columns(pl.col("price").cast(pl.String)))
    with pytest.raises(SchemaError, match=r"items\.parquet: column 'price' has dtype String, expected float"):
        validate_dataset(dd.root)


def test_cli_schema_error_exits_nonzero(make_dataset):
    dd = make_dataset(reviews=lambda df: df.with_columns(pl.col("rating").cast(pl.String)))
    result = CliRunner().invoke(cli, ["data", "validate", str(dd.root)])
    assert result.exit_code != 0
    assert "reviews.parquet" in result.output and "'rating'" in result.output


def _bad_items(root):
    def mutate(df):
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "images" / "broken.png").write_bytes(b"this is not a png")
        (root / "images" / "notes.txt").write_text("hello")
        write_image(root.parent / "outside.png")
        extra = pl.DataFrame(
            {
                "item_id": [None, "i0", "x_missing", "x_broken", "x_text", "x_escape", "x_abs", "x_price", "x_noimg"],
                "title": ["t"] * 9,
                "description": ["d"] * 9,
                "category": ["c"] * 9,
                "price": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -3.0, 2.0],
                "image_path": [
                    "images/i0.png", "images/i0.png", "images/nope.png", "images/broken.png", "images/notes.txt",
                    "../outside.png", str(root.parent / "outside.png"), "images/i1.png", None,
                ],
                "created_at": [_ts(0)] * 9,
            }
        )
        return pl.concat([df, extra])

    return mutate


def test_item_quarantine_reasons(tmp_path, make_dataset):
    root = tmp_path / "ds"
    dd = make_dataset(items=_bad_items(root))
    ds = validate_dataset(dd.root)
    rep = ds.report.tables["items"]
    assert rep.reasons == {
        "null_key": 1,
        "duplicate_id": 1,
        "image_missing": 1,
        "image_unreadable": 2,
        "image_path_escapes_dataset": 2,
        "bad_price": 1,
    }
    assert rep.rows_in == 13 and rep.accepted == 5 and rep.reconciled
    assert rep.notes["items_without_image"] == 1
    quarantine = pl.read_parquet(root / "quarantine" / "items.parquet")
    assert quarantine.height == 8 and "reason" in quarantine.columns
    assert set(ds.items["item_id"]) == {"i0", "i1", "i2", "i3", "x_noimg"}


def test_event_quarantine_reasons_reconcile(make_dataset):
    def mutate(df):
        bad = pl.DataFrame(
            {
                "user_id": [None, "ghost", "u0", "u0", "u0", "u0", "u0", "u0", "u0"],
                "item_id": ["i0", "i0", "nope", "i0", "i0", "i0", "i0", "i0", "i1"],
                "ts": ["2026-03-02T00:00:00", "2026-03-02T00:00:00", "2026-03-02T00:00:00", "not a date",
                       "1970-01-02T00:00:00", "2026-03-03T00:00:00", "2026-03-03T00:00:00", "2026-03-04T00:00:00", None],
                "event": ["view", "view", "view", "view", "view", "like", "view", "view", "view"],
                "quantity": [1, 1, 1, 1, 1, 1, -2, 1, 1],
            }
        )
        good = df.with_columns(pl.col("ts").dt.strftime("%Y-%m-%dT%H:%M:%S"))
        dup = good.head(1)
        return pl.concat([good, bad, dup])

    ds = validate_dataset(make_dataset(interactions=mutate).root, now=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    rep = ds.report.tables["interactions"]
    assert rep.reasons == {
        "null_key": 1,
        "unknown_user": 1,
        "unknown_item": 1,
        "bad_timestamp": 1,
        "missing_timestamp": 1,
        "timestamp_out_of_range": 1,
        "unknown_event": 1,
        "bad_quantity": 1,
        "duplicate_event": 1,
    }
    assert rep.rows_in == 8 + 9 + 1
    assert rep.accepted == 9  # the 8 good rows and the late-but-valid 2026-03-04 one
    assert rep.reconciled
    q = pl.read_parquet(ds.dir.quarantine_dir / "interactions.parquet")
    assert "not a date" in q["ts"].to_list()  # quarantine keeps the row as it was read


def test_future_timestamps_are_out_of_range(make_dataset):
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    dd = make_dataset(reviews=lambda df: df.with_columns(pl.lit(future).alias("ts")))
    rep = validate_dataset(dd.root).report.tables["reviews"]
    assert rep.reasons == {"timestamp_out_of_range": 2}


def test_review_rating_and_duplicates(make_dataset):
    def mutate(df):
        bad = df.head(1).with_columns(pl.lit(7, dtype=pl.Int64).alias("rating"))
        zero = df.head(1).with_columns(pl.lit(0, dtype=pl.Int64).alias("rating"))
        return pl.concat([df, bad, zero, df.tail(1)])

    rep = validate_dataset(make_dataset(reviews=mutate).root).report.tables["reviews"]
    assert rep.reasons == {"rating_out_of_range": 2, "duplicate_review": 1}
    assert rep.accepted == 2 and rep.reconciled


def test_quarantined_items_cascade_to_their_events(tmp_path, make_dataset):
    root = tmp_path / "ds"

    def items(df):
        write_image(root / "images" / "i3.png")
        (root / "images" / "i3.png").write_bytes(b"broken")
        return df

    ds = validate_dataset(make_dataset(items=items).root)
    assert ds.report.tables["items"].reasons == {"image_unreadable": 1}
    # i3's events are quarantined as unknown_item, not dropped
    assert ds.report.tables["interactions"].reasons == {"unknown_item": 2}


# --- later jobs keep what a stricter validation quarantined ------------------------------


def _truncate_image(root, name="i3.png"):
    path = root / "images" / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # opens (header intact), fails to decode


def _saved(root):
    report = json.loads((root / "validation_report.json").read_text())
    return report, {t: pl.read_parquet(root / "quarantine" / f"{t}.parquet") for t in ("items", "interactions")}


def test_a_later_load_keeps_the_image_quarantine(make_dataset):
    dd = make_dataset()
    _truncate_image(dd.root)
    strict = validate_dataset(dd.root)  # decodes images
    assert strict.report.tables["items"].reasons == {"image_unreadable": 1}
    assert strict.report.tables["interactions"].reasons == {"unknown_item": 2}

    for write in (True, False):
        ds = load_dataset(dd.root) if write else validate_dataset(dd.root, ValidationConfig(check_images=False), write=False)
        assert "i3" not in set(ds.items["item_id"]) and "i3" not in set(ds.interactions["item_id"])
        assert ds.report.tables["items"].reasons == {"image_unreadable": 1}
        assert ds.report.tables["interactions"].reasons == {"unknown_item": 2}
        for rep in ds.report.tables.values():
            assert rep.reconciled
    report, quarantine = _saved(dd.root)
    assert report["config"]["check_images"] is True
    assert report["tables"]["items"]["reasons"] == {"image_unreadable": 1}
    assert report["tables"]["interactions"]["quarantined"] == 2
    assert quarantine["items"]["item_id"].to_list() == ["i3"]
    assert quarantine["interactions"].height == 2


def test_a_later_job_adds_new_problems_to_the_report(make_dataset):
    dd = make_dataset()
    _truncate_image(dd.root)
    validate_dataset(dd.root)
    os.remove(dd.root / "images" / "i2.png")  # a new problem a non-decoding load does see
    ds = load_dataset(dd.root)
    assert ds.report.tables["items"].reasons == {"image_unreadable": 1, "image_missing": 1}
    assert set(ds.items["item_id"]) == {"i0", "i1"}
    rep = ds.report.tables["interactions"]
    assert rep.reasons == {"unknown_item": 4} and rep.reconciled
    report, quarantine = _saved(dd.root)
    assert report["tables"]["items"]["reasons"] == {"image_unreadable": 1, "image_missing": 1}
    assert sorted(quarantine["items"]["item_id"]) == ["i2", "i3"]
    assert report["config"]["check_images"] is True


def test_a_saved_quarantine_does_not_apply_to_rewritten_tables(make_dataset):
    dd = make_dataset()
    _truncate_image(dd.root)
    validate_dataset(dd.root)
    write_image(dd.root / "images" / "i3.png")  # fixed, and the catalogue re-written in another order
    dd.write_table("items", dd.read_raw("items").reverse())
    dd.write_manifest("fixture", "test")
    ds = load_dataset(dd.root)
    for rep in ds.report.tables.values():
        assert rep.quarantined == 0, rep


def test_a_full_validation_re_checks_a_fixed_image(make_dataset):
    dd = make_dataset()
    _truncate_image(dd.root)
    validate_dataset(dd.root)
    write_image(dd.root / "images" / "i3.png")
    ds = validate_dataset(dd.root)  # decodes again: the image is fine now
    assert ds.report.tables["items"].quarantined == 0
    assert load_dataset(dd.root).report.tables["items"].quarantined == 0


# --- row rules ---------------------------------------------------------------------------


def test_infinite_price_is_bad_price(make_dataset):
    dd = make_dataset(items=lambda df: df.with_columns(pl.Series("price", [float("inf"), float("-inf"), float("nan"), 1.0])))
    rep = validate_dataset(dd.root).report.tables["items"]
    assert rep.reasons == {"bad_price": 3} and rep.reconciled


def test_iso_timestamp_variants_are_accepted(make_dataset):
    written = [
        "2026-03-02T01:02:03",
        "2026-03-02 01:02:03",
        "2026-03-02 01:02:03.250",
        "2026-03-02T01:02:03.250Z",
        "2026-03-02T01:02:03Z",
        "2026-03-02T01:02:03+00:00",
        "2026-03-02 01:02:03+0000",
        "2026-03-02T03:02:03+02:00",
        "2026-03-02",
    ]
    expected = [
        dt.datetime(2026, 3, 2, 1, 2, 3, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, 1, 2, 3, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, 1, 2, 3, 250_000, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, 1, 2, 3, 250_000, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, 1, 2, 3, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, 1, 2, 3, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, 1, 2, 3, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, 1, 2, 3, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
    ]
    garbage = ["yesterday", "2026-13-45", "02/03/2026", "2026-03-02T25:00:00"]
    n = len(written) + len(garbage)
    events = pl.DataFrame(
        {
            "user_id": ["u0"] * n,
            "item_id": ["i0"] * n,
            "ts": written + garbage,
            "event": ["view"] * n,
            "quantity": list(range(1, n + 1)),  # no two rows alike
        }
    )
    ds = validate_dataset(make_dataset(interactions=events).root)
    rep = ds.report.tables["interactions"]
    assert rep.reasons == {"bad_timestamp": len(garbage)} and rep.reconciled
    assert ds.interactions.sort("quantity")["ts"].to_list() == expected
    q = pl.read_parquet(ds.dir.quarantine_dir / "interactions.parquet")
    assert sorted(q["ts"]) == sorted(garbage)


def test_blank_ids_are_null_keys(make_dataset):
    def events(df):
        blank = df.head(3).with_columns(
            pl.Series("user_id", ["", "   ", "u0"]), pl.Series("item_id", ["i0", "i0", " "]), pl.Series("quantity", [7, 8, 9])
        )
        return pl.concat([df, blank])

    def reviews(df):
        return pl.concat([df, df.head(1).with_columns(pl.lit("").alias("user_id"))])

    ds = validate_dataset(make_dataset(interactions=events, reviews=reviews).root)
    assert ds.report.tables["interactions"].reasons == {"null_key": 3}
    assert ds.report.tables["reviews"].reasons == {"null_key": 1}


def test_validation_writes_under_the_folder_lock(make_dataset, tmp_path, monkeypatch):
    import data.validate as validate_mod
    from data.dataset import DatasetBusyError
    from tests.test_io import _holder

    monkeypatch.setattr(validate_mod, "LOCK_WAIT_S", 0.2)
    dd = make_dataset()
    proc, release = _holder(dd.root, tmp_path)
    try:
        with pytest.raises(DatasetBusyError, match=rf"{dd.root} is in use by PID {proc.pid}"):
            validate_dataset(dd.root)
        result = CliRunner().invoke(cli, ["data", "validate", str(dd.root)])
        assert result.exit_code != 0 and f"in use by PID {proc.pid}" in result.output and "Traceback" not in result.output
        validate_dataset(dd.root, write=False)  # reading needs no lock
    finally:
        release.write_text("go")
        proc.wait(timeout=60)
    validate_dataset(dd.root)
    assert not (dd.root / ".lock").exists()


def test_an_unchanged_report_is_not_rewritten(make_dataset):
    dd = make_dataset()
    validate_dataset(dd.root)
    before = os.stat(dd.root / "validation_report.json").st_mtime_ns
    load_dataset(dd.root)
    validate_dataset(dd.root)
    assert os.stat(dd.root / "validation_report.json").st_mtime_ns == before


def test_a_missing_saved_quarantine_is_a_clear_error(make_dataset):
    dd = make_dataset()
    _truncate_image(dd.root)
    validate_dataset(dd.root)
    os.remove(dd.root / "quarantine" / "items.parquet")
    with pytest.raises(DatasetError, match=r"quarantine/items\.parquet: cannot read the quarantine .*stylerec data validate"):
        load_dataset(dd.root)
    assert validate_dataset(dd.root).report.tables["items"].reasons == {"image_unreadable": 1}  # a full run starts afresh
    assert pl.read_parquet(dd.root / "quarantine" / "items.parquet")["item_id"].to_list() == ["i3"]
    assert load_dataset(dd.root).report.tables["items"].reasons == {"image_unreadable": 1}
