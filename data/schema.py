"""The canonical tables of a stylerec dataset and their schemas.

A dataset is a folder holding ``items.parquet``, ``users.parquet``,
``interactions.parquet``, ``reviews.parquet`` and ``manifest.json``. Extra columns are
allowed and carried along; the columns below are required.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase")
TABLES: tuple[str, ...] = ("items", "users", "interactions", "reviews")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # "str" | "float" | "int" | "datetime"
    nullable: bool = True
    doc: str = ""


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    doc: str = ""

    @property
    def file_name(self) -> str:
        return f"{self.name}.parquet"

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


ITEMS = TableSchema(
    "items",
    (
        Column("item_id", "str", False, "catalogue id"),
        Column("title", "str"),
        Column("description", "str"),
        Column("category", "str"),
        Column("price", "float", doc="list price; null when unknown"),
        Column("image_path", "str", doc="relative to the dataset folder; null when no image"),
        Column("created_at", "datetime", doc="when the item entered the catalogue (UTC)"),
    ),
    key=("item_id",),
    doc="One row per catalogue item.",
)
USERS = TableSchema(
    "users",
    (Column("user_id", "str", False),),
    key=("user_id",),
    doc="One row per user; any further columns are optional attributes.",
)
INTERACTIONS = TableSchema(
    "interactions",
    (
        Column("user_id", "str", False),
        Column("item_id", "str", False),
        Column("ts", "datetime", False, "UTC"),
        Column("event", "str", False, "one of view, click, cart, purchase"),
        Column("quantity", "int", False, ">= 1"),
    ),
    key=("user_id", "item_id", "ts", "event"),
    doc="One row per user event on an item.",
)
REVIEWS = TableSchema(
    "reviews",
    (
        Column("user_id", "str", False),
        Column("item_id", "str", False),
        Column("ts", "datetime", False, "UTC"),
        Column("rating", "int", False, "1-5"),
        Column("text", "str"),
    ),
    key=("user_id", "item_id", "ts"),
    doc="Product reviews written by users.",
)

SCHEMAS: dict[str, TableSchema] = {s.name: s for s in (ITEMS, USERS, INTERACTIONS, REVIEWS)}

UTC_DATETIME = pl.Datetime("us", "UTC")

# polars dtypes written by stylerec for each column kind
CANONICAL_DTYPES: dict[str, pl.DataType] = {
    "str": pl.String(),
    "float": pl.Float64(),
    "int": pl.Int64(),
    "datetime": UTC_DATETIME,
}


def dtype_matches(kind: str, dtype: pl.DataType) -> bool:
    """Whether a column of ``dtype`` can be read as ``kind`` without loss.

    Datetime columns may also arrive as strings: those are parsed row by row, and rows
    that do not parse are quarantined rather than failing the whole table.
    """
    if kind == "str":
        return dtype in (pl.String, pl.Categorical, pl.Enum) or isinstance(dtype, (pl.Categorical, pl.Enum))
    if kind == "float":
        return dtype.is_numeric()
    if kind == "int":
        return dtype.is_integer()
    if kind == "datetime":
        return isinstance(dtype, pl.Datetime) or dtype == pl.Date or dtype == pl.String
    raise ValueError(f"unknown column kind {kind!r}")
