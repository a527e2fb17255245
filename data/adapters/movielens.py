"""Import MovieLens-100K, as shipped in RecBole's atomic-file format, into stylerec tables.

SRC is the ``recbole==1.2.1`` wheel itself (a zip, read in place: nothing is extracted or
downloaded) or a folder holding the three files (an extracted ``ml-100k`` folder, or an
extracted wheel). Files read, tab-separated, with typed headers (``name:type``)::

    ml-100k.inter   user_id:token  item_id:token  rating:float  timestamp:float
    ml-100k.item    item_id:token  movie_title:token_seq  release_year:token  class:token_seq
    ml-100k.user    user_id:token  age:token  gender:token  occupation:token  zip_code:token

Mapping:

- every rating is one event at its timestamp (UTC): ``purchase`` when rating >=
  ``purchase_threshold`` (default 4), else ``view``; quantity 1; ``rating`` kept;
- items: title = movie title; description = the genres and the release year as text;
  category = the first genre, all genres kept in ``genres`` ("|"-separated); price and
  image_path null (MovieLens has neither); created_at = 1 January of the release year (the
  files give only a year), or, when the year is missing or not a year, the earliest rating
  time minus one day; ``release_year`` kept (null where it was not a year);
- users: user_id with age, gender, occupation and zip_code as attributes;
- reviews: none (an empty table).

The ratings (1997-98) and release dates (from 1922) predate the validator's default floor
(2000), so the manifest records ``min_ts`` (1888-01-01, before any film), which
validation uses for this dataset instead.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from data.dataset import DatasetDir, DatasetError, Manifest
from data.io import sha256_file
from data.schema import UTC_DATETIME

SOURCE = "movielens-100k"
FILES = {
    "inter": ("user_id", "item_id", "rating", "timestamp"),
    "item": ("item_id", "movie_title", "release_year", "class"),
    "user": ("user_id", "age", "gender", "occupation", "zip_code"),
}
WHEEL_DIR = "recbole/dataset_example/ml-100k"
MIN_TS = dt.datetime(1888, 1, 1, tzinfo=dt.UTC)  # before any film: the floor validation applies
FALLBACK_GAP = dt.timedelta(days=1)  # created_at without a release year: earliest rating minus this
DEFAULT_PURCHASE_THRESHOLD = 4


@dataclass(frozen=True)
class MovieLensImportReport:
    items: int
    items_without_year: int
    users: int
    ratings: int
    purchases: int
    views: int

    def format(self) -> str:
        return (
            f"MovieLens-100K import: {self.items:,} items ({self.items_without_year:,} without a release year), "
            f"{self.users:,} users, {self.ratings:,} ratings -> {self.purchases:,} purchase + {self.views:,} view events\n"
            "no images, so no style embeddings: train without the style features "
            "(e.g. `stylerec train DIR --config recsys/configs/two_tower_id_only.toml`)"
        )


def read_source(src: Path) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """The three files as string tables (typed headers stripped) and a description of SRC."""
    if src.is_dir():
        folder = next((d for d in (src, src / WHEEL_DIR) if (d / "ml-100k.inter").is_file()), src)
        blobs = {}
        for kind in FILES:
            path = folder / f"ml-100k.{kind}"
            if not path.is_file():
                raise DatasetError(f"{src}: missing ml-100k.{kind} (expected an ml-100k folder or the recbole wheel)")
            blobs[kind] = path.read_bytes()
        origin = {"kind": "folder", "path": str(folder.resolve())} | {f"ml-100k.{k}_sha256": sha256_file(folder / f"ml-100k.{k}") for k in FILES}
    elif zipfile.is_zipfile(src):
        try:
            with zipfile.ZipFile(src) as zf:
                names = set(zf.namelist())
                prefix = next((p for p in (f"{WHEEL_DIR}/", "ml-100k/", "") if f"{p}ml-100k.inter" in names), f"{WHEEL_DIR}/")
                missing = [f"{prefix}ml-100k.{k}" for k in FILES if f"{prefix}ml-100k.{k}" not in names]
                if missing:
                    raise DatasetError(f"{src}: the archive lacks {', '.join(missing)} (expected the recbole==1.2.1 wheel)")
                blobs = {kind: zf.read(f"{prefix}ml-100k.{kind}") for kind in FILES}
        except (zipfile.BadZipFile, OSError) as exc:  # a truncated or corrupt download
            raise DatasetError(f"{src}: cannot read the archive: {exc}") from exc
        origin = {"kind": "wheel" if src.suffix == ".whl" else "zip", "file": src.name, "sha256": sha256_file(src), "member_dir": prefix.rstrip("/")}
    else:
        raise DatasetError(f"{src}: neither a folder nor a wheel/zip file (expected the recbole==1.2.1 wheel or an ml-100k folder)")
    tables = {}
    for kind, blob in blobs.items():
        try:
            df = pl.read_csv(io.BytesIO(blob), separator="\t", quote_char=None, infer_schema=False, encoding="utf8")
        except Exception as exc:  # polars raises several error types for malformed text
            raise DatasetError(f"{src}: cannot read ml-100k.{kind}: {exc}") from exc
        df = df.rename({c: c.split(":", 1)[0] for c in df.columns})
        missing = [c for c in FILES[kind] if c not in df.columns]
        if missing:
            raise DatasetError(f"{src}: ml-100k.{kind} lacks column(s) {missing}")
        tables[kind] = df.select(pl.col(c).str.strip_chars() for c in FILES[kind])
    return tables, origin


def _int(col: str) -> pl.Expr:
    """A numeric text column (``3``, ``3.0``, checked by :func:`_check_whole`) as Int64."""
    return pl.col(col).cast(pl.Float64).cast(pl.Int64).alias(col)


def _check_whole(df: pl.DataFrame, col: str, kind: str) -> None:
    number = pl.col(col).cast(pl.Float64, strict=False)
    bad = df.filter(number.is_null() | ~number.is_finite() | (number % 1 != 0))
    if bad.height:
        raise DatasetError(f"ml-100k.{kind}: column {col!r} has {bad.height} value(s) that are not whole numbers, e.g. {bad[col][0]!r}")


def map_tables(tables: dict[str, pl.DataFrame], purchase_threshold: int = DEFAULT_PURCHASE_THRESHOLD) -> dict[str, pl.DataFrame]:
    """The stylerec tables (items, users, interactions, reviews) for the three source tables."""
    inter = tables["inter"]
    for col in ("rating", "timestamp"):
        _check_whole(inter, col, "inter")
    interactions = inter.with_columns(_int("rating"), _int("timestamp")).select(
        "user_id",
        "item_id",
        pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC").cast(UTC_DATETIME).alias("ts"),
        pl.when(pl.col("rating") >= purchase_threshold).then(pl.lit("purchase")).otherwise(pl.lit("view")).alias("event"),
        pl.lit(1, dtype=pl.Int64).alias("quantity"),
        "rating",
    )
    first_rating = interactions.get_column("ts").min()
    if first_rating is None:
        raise DatasetError("ml-100k.inter: no ratings")
    fallback = first_rating - FALLBACK_GAP

    genres = pl.col("class").fill_null("").str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
    year = pl.when(pl.col("release_year").str.contains(r"^\d{4}$")).then(pl.col("release_year").cast(pl.Int64, strict=False))
    items = (
        tables["item"]
        .with_columns(genres.alias("__genres"), year.alias("release_year"))
        .select(
            "item_id",
            pl.col("movie_title").alias("title"),
            pl.concat_str(
                [
                    pl.col("__genres").list.join(", ").replace("", None),
                    pl.lit("film"),
                    pl.format("released in {}", pl.col("release_year")),
                ],
                separator=" ",
                ignore_nulls=True,
            ).alias("description"),
            pl.col("__genres").list.first().alias("category"),
            pl.lit(None, dtype=pl.Float64).alias("price"),
            pl.lit(None, dtype=pl.String).alias("image_path"),
            pl.datetime(pl.col("release_year"), 1, 1, time_zone="UTC").cast(UTC_DATETIME).fill_null(pl.lit(fallback).cast(UTC_DATETIME)).alias("created_at"),
            pl.col("__genres").list.join("|").replace("", None).alias("genres"),
            "release_year",
        )
    )

    user = tables["user"]
    _check_whole(user, "age", "user")
    users = user.with_columns(_int("age")).select("user_id", "age", "gender", "occupation", "zip_code")
    reviews = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "ts": UTC_DATETIME, "rating": pl.Int64, "text": pl.String})
    return {"items": items, "users": users, "interactions": interactions, "reviews": reviews}


def import_movielens(
    src: str | os.PathLike[str], out: str | os.PathLike[str], purchase_threshold: int = DEFAULT_PURCHASE_THRESHOLD
) -> tuple[Manifest, MovieLensImportReport]:
    """Import MovieLens-100K from ``src`` (the recbole wheel or an ml-100k folder) into the
    dataset folder ``out`` (locked meanwhile); an existing dataset there is overwritten."""
    if not 1 <= purchase_threshold <= 5:
        raise DatasetError(f"purchase threshold {purchase_threshold} is not a rating (1-5)")
    src = Path(src)
    tables, origin = read_source(src)  # before the lock: a bad SRC leaves OUT untouched
    out_tables = map_tables(tables, purchase_threshold)
    dd = DatasetDir(out)
    with dd.lock("stylerec data import-movielens"):
        for table, df in out_tables.items():
            dd.write_table(table, df)
        events = out_tables["interactions"].get_column("event")
        report = MovieLensImportReport(
            items=out_tables["items"].height,
            items_without_year=int(out_tables["items"].get_column("release_year").null_count()),
            users=out_tables["users"].height,
            ratings=tables["inter"].height,
            purchases=int((events == "purchase").sum()),
            views=int((events == "view").sum()),
        )
        manifest = dd.write_manifest(
            "movielens-100k",
            SOURCE,
            params={"src": str(src.resolve()), "purchase_threshold": purchase_threshold},
            extra={"source_file": origin, "min_ts": MIN_TS.isoformat(), "import_report": report.__dict__},
        )
    return manifest, report
