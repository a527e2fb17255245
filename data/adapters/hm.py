"""Import the public "H&M Personalized Fashion Recommendations" data into stylerec tables.

Layout read (CSV, or Parquet for articles)::

    SRC/articles.csv            article_id, prod_name, product_type_name, ..., detail_desc
    SRC/customers.csv           customer_id, FN, Active, club_member_status, fashion_news_frequency, age, postal_code
    SRC/transactions_train.csv  t_dat, customer_id, article_id, price, sales_channel_id
    SRC/images/<first 3 digits of article_id>/<article_id>.jpg

Transactions become purchases (repeated identical rows = quantity, timestamp at the start
of the day, UTC). The image folder is linked, not copied, unless asked.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from data.dataset import DatasetDir, DatasetError, Manifest
from data.schema import UTC_DATETIME

DESCRIPTIVE_COLUMNS = (
    "product_group_name",
    "graphical_appearance_name",
    "colour_group_name",
    "perceived_colour_value_name",
    "department_name",
    "index_name",
    "section_name",
    "garment_group_name",
)
ARTICLE_ID_WIDTH = 10


@dataclass(frozen=True)
class HMImportReport:
    articles: int
    articles_without_image: int
    customers: int
    transaction_rows: int
    purchases: int

    def format(self) -> str:
        return (
            f"H&M import: {self.articles:,} articles ({self.articles_without_image:,} without image), "
            f"{self.customers:,} customers, {self.transaction_rows:,} transaction rows -> {self.purchases:,} purchase events"
        )


def _find(src: Path, stem: str, allow_parquet: bool) -> Path:
    for ext in (".csv", ".parquet") if allow_parquet else (".csv",):
        path = src / f"{stem}{ext}"
        if path.is_file():
            return path
    raise DatasetError(f"{src}: missing {stem}.csv" + (" (or .parquet)" if allow_parquet else ""))


def _padded_article_id(col: str = "article_id") -> pl.Expr:
    """Article ids as 10-digit zero-padded strings, whether read as numbers or text."""
    return pl.col(col).cast(pl.String).str.strip_chars().str.zfill(ARTICLE_ID_WIDTH).alias(col)


def _require(df: pl.DataFrame | pl.LazyFrame, path: Path, columns: tuple[str, ...]) -> None:
    names = df.collect_schema().names() if isinstance(df, pl.LazyFrame) else df.columns
    missing = [c for c in columns if c not in names]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}")


def read_articles(src: Path) -> pl.DataFrame:
    path = _find(src, "articles", allow_parquet=True)
    if path.suffix == ".csv":
        df = pl.read_csv(path, schema_overrides={"article_id": pl.String}, infer_schema_length=10_000)
    else:
        df = pl.read_parquet(path)
    _require(df, path, ("article_id", "prod_name", "product_type_name"))
    return df.with_columns(_padded_article_id())


def _description() -> pl.Expr:
    present = [pl.col(c).cast(pl.String) for c in DESCRIPTIVE_COLUMNS]
    return pl.concat_str(
        [pl.col("detail_desc").cast(pl.String).fill_null(""), pl.concat_str(present, separator=", ", ignore_nulls=True)],
        separator=" | ",
        ignore_nulls=True,
    ).str.strip_chars(" |").alias("description")


def import_hm(src: str | os.PathLike[str], out: str | os.PathLike[str], copy_images: bool = False) -> tuple[Manifest, HMImportReport]:
    """Import the H&M layout at ``src`` into the dataset folder ``out`` (locked meanwhile)."""
    dd = DatasetDir(out)
    with dd.lock("stylerec data import-hm"):
        return _import_hm(Path(src), dd, copy_images)


def _import_hm(src: Path, dd: DatasetDir, copy_images: bool) -> tuple[Manifest, HMImportReport]:
    articles = read_articles(src)
    for col in ("detail_desc", *DESCRIPTIVE_COLUMNS):
        if col not in articles.columns:
            articles = articles.with_columns(pl.lit(None, dtype=pl.String).alias(col))
    purchases, tx_rows = read_purchases(src)
    linked = place_images(src, dd.root, copy_images)
    items = items_table(articles, purchases, src / "images")
    users = read_customers(src)
    reviews = pl.DataFrame(schema={"user_id": pl.String, "item_id": pl.String, "ts": UTC_DATETIME, "rating": pl.Int64, "text": pl.String})
    dd.write_table("items", items)
    dd.write_table("users", users)
    dd.write_table("interactions", purchases)
    dd.write_table("reviews", reviews)
    report = HMImportReport(
        articles=items.height,
        articles_without_image=int(items.get_column("image_path").null_count()),
        customers=users.height,
        transaction_rows=int(tx_rows),
        purchases=purchases.height,
    )
    manifest = dd.write_manifest(
        "hm",
        "hm-kaggle",
        params={"src": str(src.resolve()), "copy_images": copy_images},
        linked_dirs=linked,
        extra={"import_report": report.__dict__},
    )
    return manifest, report


def read_purchases(src: Path) -> tuple[pl.DataFrame, int]:
    """(purchases, transaction rows read): identical rows of a day = one purchase with a quantity."""
    tx_path = _find(src, "transactions_train", allow_parquet=True)
    tx = pl.scan_csv(tx_path, schema_overrides={"article_id": pl.String, "customer_id": pl.String}) if tx_path.suffix == ".csv" else pl.scan_parquet(tx_path)
    _require(tx, tx_path, ("t_dat", "customer_id", "article_id", "price"))
    tx = tx.with_columns(_padded_article_id(), pl.col("t_dat").cast(pl.String).str.to_date("%Y-%m-%d", strict=False))
    tx_rows = tx.select(pl.len()).collect().item()
    has_channel = "sales_channel_id" in tx.collect_schema().names()
    purchases = (
        tx.group_by(["customer_id", "article_id", "t_dat"])
        .agg(pl.len().alias("quantity"), pl.col("price").mean(), *([pl.col("sales_channel_id").first()] if has_channel else []))
        .select(
            pl.col("customer_id").alias("user_id"),
            pl.col("article_id").alias("item_id"),
            pl.col("t_dat").cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias("ts"),
            pl.lit("purchase").alias("event"),
            pl.col("quantity").cast(pl.Int64),
            pl.col("price").cast(pl.Float64),
            *([pl.col("sales_channel_id")] if has_channel else []),
        )
        .sort(["user_id", "ts", "item_id"])
        .collect()
    )
    return purchases, tx_rows


def place_images(src: Path, root: Path, copy_images: bool) -> dict[str, str]:
    """Link the image folder into the dataset (returned, for the manifest) or copy it."""
    linked: dict[str, str] = {}
    image_src = src / "images"
    image_dst = root / "images"
    if image_src.is_dir():
        if image_dst.is_symlink() or image_dst.is_file():
            image_dst.unlink()
        elif image_dst.is_dir():
            shutil.rmtree(image_dst)
        if copy_images:
            shutil.copytree(image_src, image_dst)
        else:
            image_dst.symlink_to(image_src.resolve(), target_is_directory=True)
            linked["images"] = str(image_src.resolve())
    return linked


def items_table(articles: pl.DataFrame, purchases: pl.DataFrame, image_src: Path) -> pl.DataFrame:
    """Articles as items: median sold price, first sale as created_at, the image if it exists."""
    item_stats = purchases.group_by("item_id").agg(pl.col("price").median().alias("median_price"), pl.col("ts").min().alias("first_sold"))
    first_day = purchases.get_column("ts").min()
    rel_paths = [f"images/{aid[:3]}/{aid}.jpg" for aid in articles.get_column("article_id").to_list()]
    exists = [(image_src / p.removeprefix("images/")).is_file() for p in rel_paths]
    return (
        articles.with_columns(
            pl.Series("image_path", [p if e else None for p, e in zip(rel_paths, exists, strict=True)], dtype=pl.String),
        )
        .join(item_stats, left_on="article_id", right_on="item_id", how="left")
        .select(
            pl.col("article_id").alias("item_id"),
            pl.col("prod_name").cast(pl.String).alias("title"),
            _description(),
            pl.col("product_type_name").cast(pl.String).alias("category"),
            pl.col("median_price").alias("price"),
            "image_path",
            pl.col("first_sold").fill_null(first_day).cast(UTC_DATETIME).alias("created_at"),
            *[pl.col(c).cast(pl.String) for c in DESCRIPTIVE_COLUMNS],
        )
    )


def read_customers(src: Path) -> pl.DataFrame:
    cust_path = _find(src, "customers", allow_parquet=True)
    customers = pl.read_csv(cust_path, schema_overrides={"customer_id": pl.String, "postal_code": pl.String}) if cust_path.suffix == ".csv" else pl.read_parquet(cust_path)
    _require(customers, cust_path, ("customer_id",))
    return customers.rename({"customer_id": "user_id"})
