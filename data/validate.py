"""Validation with quarantine: every row is either accepted or quarantined with a reason.

Structural problems (a missing table, a missing column, a column of the wrong type) make
the whole dataset unreadable and raise :class:`SchemaError` naming the file and column.
Row-level problems never raise: the row goes to ``quarantine/<table>.parquet`` with a
``reason`` column (and ``source_row``, its 0-based row in the table), and the report
reconciles rows in = accepted + quarantined per table.

What a full validation (images decoded) quarantined stays quarantined: the lighter load
every job runs (images not decoded) re-applies the saved quarantine of the same tables
(same manifest fingerprint) by row, and adds what it finds to the report instead of
replacing it. Only a new full validation, or new tables, start afresh.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from PIL import Image

from data.dataset import REPORT_FILE, DatasetDir, DatasetError, DatasetIntegrityError, Manifest, SchemaError  # noqa: F401 (re-exported)
from data.io import write_json, write_parquet
from data.schema import CANONICAL_DTYPES, EVENT_TYPES, SCHEMAS, TABLES, UTC_DATETIME, TableSchema, dtype_matches

_ROW = "__row"
SOURCE_ROW = "source_row"  # in quarantine tables: the row's 0-based position in the table file
KEPT_NOTE = "kept_from_earlier_validation"
LOCK_WAIT_S = 30.0  # how long a job waits for another one writing the report


@dataclass(frozen=True)
class ValidationConfig:
    min_ts: dt.datetime = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    max_future: dt.timedelta = dt.timedelta(days=1)  # allowed clock skew past "now"
    check_images: bool = True  # decode every image (slow on huge catalogues)
    image_workers: int = 8


@dataclass
class TableReport:
    table: str
    rows_in: int
    accepted: int
    quarantined: int
    reasons: dict[str, int] = field(default_factory=dict)
    notes: dict[str, int] = field(default_factory=dict)

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.accepted + self.quarantined


@dataclass
class ValidationReport:
    dataset: str
    tables: dict[str, TableReport]
    config: dict[str, Any]
    fingerprint: str = ""  # the manifest fingerprint of the tables validated

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "fingerprint": self.fingerprint,
            "config": self.config,
            "tables": {name: asdict(rep) | {"reconciled": rep.reconciled} for name, rep in self.tables.items()},
        }

    def format(self) -> str:
        lines = [f"validation report for {self.dataset}", f"{'table':<14}{'rows in':>12}{'accepted':>12}{'quarantined':>13}  reasons"]
        for rep in self.tables.values():
            reasons = ", ".join(f"{k}={v}" for k, v in sorted(rep.reasons.items())) or "-"
            lines.append(f"{rep.table:<14}{rep.rows_in:>12,}{rep.accepted:>12,}{rep.quarantined:>13,}  {reasons}")
            for k, v in rep.notes.items():
                lines.append(f"{'':<14}note: {k} = {v:,}")
        return "\n".join(lines)


@dataclass
class ValidatedDataset:
    """The accepted rows of every table, plus what was quarantined and the report."""

    dir: DatasetDir
    manifest: Manifest
    tables: dict[str, pl.DataFrame]
    quarantine: dict[str, pl.DataFrame]
    report: ValidationReport

    @property
    def items(self) -> pl.DataFrame:
        return self.tables["items"]

    @property
    def users(self) -> pl.DataFrame:
        return self.tables["users"]

    @property
    def interactions(self) -> pl.DataFrame:
        return self.tables["interactions"]

    @property
    def reviews(self) -> pl.DataFrame:
        return self.tables["reviews"]


# ---------------------------------------------------------------------------------------
# schema checks and normalisation


def check_schema(schema: TableSchema, df: pl.DataFrame, path: Path) -> None:
    for col in schema.columns:
        if col.name not in df.columns:
            raise SchemaError(f"{path}: missing column {col.name!r} (table {schema.name}; has {df.columns})")
        dtype = df.schema[col.name]
        if dtype == pl.Null:  # an all-null column carries no type; nullability is checked per row
            continue
        if not dtype_matches(col.kind, dtype):
            raise SchemaError(
                f"{path}: column {col.name!r} has dtype {dtype}, expected {col.kind} "
                f"({CANONICAL_DTYPES[col.kind]})"
            )


# ISO-8601 as written in the wild, after `_iso_text`: "T" separator, offset "+hh:mm"/"+hhmm"
_ISO_AWARE = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_ISO_NAIVE = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")


def _iso_text(col: pl.Expr) -> pl.Expr:
    """Strings in one ISO-8601 spelling: date and time joined by "T", "Z"/"UTC" as "+00:00"."""
    return (
        col.str.strip_chars()
        .str.replace(r"^(\d{4}-\d{2}-\d{2})[ T]", "${1}T")
        .str.replace(r"\s*(?:[zZ]|UTC)$", "+00:00")
        .str.replace(r"\s+([+-]\d{2}:?\d{2})$", "${1}")
    )


def parse_timestamps(col: pl.Expr) -> pl.Expr:
    """ISO-8601 strings as UTC datetimes: space or "T" separator, with or without seconds
    and fractional seconds, "Z" or a "+hh:mm" / "+hhmm" offset (converted to UTC; none means
    UTC), or a date alone (midnight UTC). Anything else becomes null."""
    text = _iso_text(col)
    return pl.coalesce(
        *[text.str.to_datetime(fmt, strict=False, time_unit="us").dt.convert_time_zone("UTC") for fmt in _ISO_AWARE],
        *[text.str.to_datetime(fmt, strict=False, time_unit="us").dt.replace_time_zone("UTC") for fmt in _ISO_NAIVE],
        text.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
    )


def _normalise_column(df: pl.DataFrame, name: str, kind: str) -> pl.Expr:
    dtype = df.schema[name]
    col = pl.col(name)
    if kind == "datetime":
        if dtype == pl.String:
            return parse_timestamps(col).alias(name)
        if dtype == pl.Date:
            return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC").alias(name)
        if isinstance(dtype, pl.Datetime):
            col = col.dt.cast_time_unit("us")
            if dtype.time_zone is None:
                return col.dt.replace_time_zone("UTC").alias(name)
            return col.dt.convert_time_zone("UTC").alias(name)
        return col.cast(UTC_DATETIME).alias(name)
    return col.cast(CANONICAL_DTYPES[kind]).alias(name)


def normalise(schema: TableSchema, df: pl.DataFrame) -> pl.DataFrame:
    """Cast required columns to their canonical dtypes (unparseable timestamps become null)."""
    return df.with_columns([_normalise_column(df, c.name, c.kind) for c in schema.columns])


# ---------------------------------------------------------------------------------------
# row rules


def _blank(name: str) -> pl.Expr:
    """A key that is null, empty or only white space."""
    return pl.col(name).is_null() | (pl.col(name).str.strip_chars() == "")


def _first_reason(rules: list[tuple[str, pl.Expr]]) -> pl.Expr:
    """The reason of the first rule a row breaks, or null if it breaks none."""
    return pl.coalesce([pl.when(cond).then(pl.lit(reason)) for reason, cond in rules]).alias("reason")


def _ts_rules(name: str, cfg: ValidationConfig, now: dt.datetime) -> list[tuple[str, pl.Expr]]:
    raw_null = pl.col(f"__raw_{name}_null")
    return [
        ("bad_timestamp", pl.col(name).is_null() & ~raw_null),
        ("missing_timestamp", raw_null),
        ("timestamp_out_of_range", (pl.col(name) < cfg.min_ts) | (pl.col(name) > now + cfg.max_future)),
    ]


def _image_problem(root: Path, allowed_roots: list[Path], rel: str, decode: bool) -> str | None:
    """None if ``rel`` names an image file inside the dataset (decodable, with ``decode``),
    else the quarantine reason."""
    rel_path = Path(rel)
    if rel_path.is_absolute() or ".." in rel_path.parts:
        return "image_path_escapes_dataset"
    real = Path(os.path.realpath(root / rel_path))
    if not any(real == r or r in real.parents for r in allowed_roots):
        return "image_path_escapes_dataset"
    if not real.is_file():
        return "image_missing"
    if decode:
        try:
            with Image.open(real) as im:
                im.load()
        except Exception:
            return "image_unreadable"
    return None


def _image_problems(dd: DatasetDir, manifest: Manifest | None, paths: list[str], workers: int, decode: bool) -> dict[str, str]:
    root = dd.root
    allowed = [Path(os.path.realpath(root))]
    # folders the importer linked into the dataset itself (e.g. H&M images) are inside it
    for link_name in (manifest.linked_dirs if manifest else {}):
        link = root / link_name
        if link.is_symlink():
            allowed.append(Path(os.path.realpath(link)))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        problems = pool.map(lambda rel: _image_problem(root, allowed, rel, decode), paths)
        return {rel: reason for rel, reason in zip(paths, problems, strict=True) if reason is not None}


def _split(
    df: pl.DataFrame, raw: pl.DataFrame, rules: list[tuple[str, pl.Expr]], saved: pl.DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, int]]:
    """Accepted rows, quarantined rows (as read, with ``reason`` and ``source_row``) and notes.

    ``saved`` (``source_row``, ``reason``) is an earlier validation's quarantine of the same
    table: a row it holds stays quarantined with its saved reason when no rule fires now.
    """
    flagged = df.with_columns(_first_reason(rules))
    kept = 0
    if saved is not None:
        earlier = saved.select(pl.col(SOURCE_ROW).cast(flagged.schema[_ROW]).alias(_ROW), pl.col("reason").alias("__saved_reason"))
        flagged = flagged.join(earlier, on=_ROW, how="left", maintain_order="left")
        kept = flagged.filter(pl.col("reason").is_null() & pl.col("__saved_reason").is_not_null()).height
        flagged = flagged.with_columns(pl.coalesce("reason", "__saved_reason").alias("reason"))
    accepted = flagged.filter(pl.col("reason").is_null()).drop("reason")
    bad = flagged.filter(pl.col("reason").is_not_null()).select(_ROW, "reason")
    # quarantine keeps the rows as they were read (e.g. the unparseable timestamp string)
    quarantined = (
        raw.with_row_index(_ROW)
        .join(bad, on=_ROW, how="inner")
        .sort(_ROW)
        .with_columns(pl.col(_ROW).cast(pl.Int64).alias(SOURCE_ROW))
        .drop(_ROW)
    )
    notes = {KEPT_NOTE: kept} if kept else {}
    return accepted.drop([c for c in accepted.columns if c.startswith("__")]), quarantined, notes


def _prepare(schema: TableSchema, raw: pl.DataFrame) -> pl.DataFrame:
    df = raw.with_row_index(_ROW)
    ts_cols = [c.name for c in schema.columns if c.kind == "datetime"]
    df = df.with_columns([pl.col(c).is_null().alias(f"__raw_{c}_null") for c in ts_cols])
    return normalise(schema, df)


def _validate_items(raw: pl.DataFrame, dd: DatasetDir, manifest: Manifest | None, cfg: ValidationConfig, now: dt.datetime, saved=None):
    schema = SCHEMAS["items"]
    df = _prepare(schema, raw)
    paths = df.get_column("image_path").drop_nulls().unique().to_list()
    problems = _image_problems(dd, manifest, paths, cfg.image_workers, decode=cfg.check_images)
    problem_df = pl.DataFrame(
        {"image_path": list(problems), "__image_problem": list(problems.values())},
        schema={"image_path": pl.String, "__image_problem": pl.String},
    )
    df = df.join(problem_df, on="image_path", how="left")
    rules = [
        ("null_key", _blank("item_id")),
        ("bad_price", pl.col("price").is_not_null() & (pl.col("price").is_nan() | pl.col("price").is_infinite() | (pl.col("price") < 0))),
        *_ts_rules("created_at", cfg, now),
        ("image_path_escapes_dataset", pl.col("__image_problem") == "image_path_escapes_dataset"),
        ("image_missing", pl.col("__image_problem") == "image_missing"),
        ("image_unreadable", pl.col("__image_problem") == "image_unreadable"),
        ("duplicate_id", ~pl.col("item_id").is_first_distinct()),
    ]
    df = df.sort(_ROW)
    accepted, quarantined, notes = _split(df, raw, rules, saved)
    notes["items_without_image"] = int(accepted.get_column("image_path").null_count())
    return accepted, quarantined, notes


def _validate_users(raw: pl.DataFrame, saved=None):
    schema = SCHEMAS["users"]
    df = _prepare(schema, raw)
    rules = [
        ("null_key", _blank("user_id")),
        ("duplicate_id", ~pl.col("user_id").is_first_distinct()),
    ]
    return _split(df, raw, rules, saved)


def _reference_rules(user_ids: pl.Series, item_ids: pl.Series) -> list[tuple[str, pl.Expr]]:
    return [
        ("null_key", _blank("user_id") | _blank("item_id")),
        ("unknown_user", ~pl.col("user_id").is_in(user_ids.implode())),
        ("unknown_item", ~pl.col("item_id").is_in(item_ids.implode())),
    ]


def _exact_duplicate(columns: list[str]) -> pl.Expr:
    return ~pl.struct(columns).is_first_distinct()


def _validate_interactions(raw, users, items, cfg, now, saved=None):
    schema = SCHEMAS["interactions"]
    df = _prepare(schema, raw)
    rules = [
        *_reference_rules(users.get_column("user_id"), items.get_column("item_id")),
        *_ts_rules("ts", cfg, now),
        ("unknown_event", ~pl.col("event").is_in(list(EVENT_TYPES)) | pl.col("event").is_null()),
        ("bad_quantity", pl.col("quantity").is_null() | (pl.col("quantity") < 1)),
        ("duplicate_event", _exact_duplicate([c for c in raw.columns])),
    ]
    return _split(df, raw, rules, saved)


def _validate_reviews(raw, users, items, cfg, now, saved=None):
    schema = SCHEMAS["reviews"]
    df = _prepare(schema, raw)
    rules = [
        *_reference_rules(users.get_column("user_id"), items.get_column("item_id")),
        *_ts_rules("ts", cfg, now),
        ("rating_out_of_range", pl.col("rating").is_null() | (pl.col("rating") < 1) | (pl.col("rating") > 5)),
        ("duplicate_review", _exact_duplicate([c for c in raw.columns])),
    ]
    return _split(df, raw, rules, saved)


# ---------------------------------------------------------------------------------------
# the saved validation


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _saved_validation(dd: DatasetDir, report_text: str | None, fingerprint: str) -> tuple[dict[str, pl.DataFrame], dict[str, Any]] | None:
    """The quarantine (``source_row``, ``reason`` per table) and config of an earlier
    validation of these very tables, or None when there is none (or it was of other tables)."""
    if report_text is None:
        return None
    try:
        report = json.loads(report_text)
    except ValueError:
        return None  # a broken report is replaced
    if not isinstance(report, dict) or report.get("fingerprint") != fingerprint:
        return None  # made for other tables (or before reports carried the fingerprint)
    quarantine = {}
    for table in TABLES:
        path = dd.quarantine_dir / f"{table}.parquet"
        try:
            quarantine[table] = pl.read_parquet(path, columns=[SOURCE_ROW, "reason"])
        except Exception as exc:  # polars raises several error types for missing/broken files
            raise DatasetError(
                f"{path}: cannot read the quarantine that {dd.report_path.name} records ({exc.__class__.__name__}); "
                f"run `stylerec data validate {dd.root}` to validate afresh"
            ) from exc
    config = report.get("config")
    return quarantine, config if isinstance(config, dict) else {}


def _write_validation(dd: DatasetDir, report: ValidationReport, quarantined: dict[str, pl.DataFrame], read_text: str | None, fresh: bool) -> None:
    """Write the quarantine tables, then the report (under the folder lock).

    Nothing is written when the saved report already says the same. A run that built on
    the saved report (not ``fresh``) writes nothing if another job replaced that report
    meanwhile: the other one is at least as recent.
    """
    out = json.loads(json.dumps(report.to_json(), default=str))
    paths = {table: dd.quarantine_dir / f"{table}.parquet" for table in TABLES}
    if read_text is not None and all(p.is_file() for p in paths.values()):
        with contextlib.suppress(ValueError):
            if json.loads(read_text) == out:
                return
    with dd.lock("writing the validation report", wait=LOCK_WAIT_S):
        if not fresh and _read_text(dd.report_path) != read_text:
            return
        for table, path in paths.items():
            write_parquet(quarantined[table], path)
        write_json(out, dd.report_path)  # last: the quarantine tables it describes are in place


# ---------------------------------------------------------------------------------------
# entry points


def validate_dataset(
    root: str | os.PathLike[str],
    config: ValidationConfig | None = None,
    write: bool = True,
    now: dt.datetime | None = None,
) -> ValidatedDataset:
    """Validate every table of the dataset at ``root``.

    Raises :class:`SchemaError` for structural problems and :class:`DatasetIntegrityError`
    for tables that are not the ones ``manifest.json`` records. With ``write`` the
    quarantine tables and ``validation_report.json`` are (atomically, under the folder
    lock) written into the dataset.

    A run that decodes images is a full validation and starts afresh. A lighter run keeps
    what the saved validation of the same tables quarantined (e.g. unreadable images) and
    adds what it finds itself, so a job's own load never undoes a stricter validation.
    """
    cfg = config or ValidationConfig()
    now = now or dt.datetime.now(dt.UTC)
    dd = DatasetDir(root)
    if not dd.root.is_dir():
        raise DatasetError(f"{dd.root}: dataset folder does not exist")
    manifest = dd.verified_manifest()  # the tables are the ones manifest.json (and its fingerprint) records
    raw = {}
    for table in TABLES:
        df = dd.read_raw(table)
        check_schema(SCHEMAS[table], df, dd.table_path(table))
        raw[table] = df
    dd.check_unchanged()
    fresh = cfg.check_images
    report_text = _read_text(dd.report_path)
    saved = None if fresh else _saved_validation(dd, report_text, manifest.fingerprint)
    earlier = saved[0] if saved else dict.fromkeys(TABLES)

    accepted: dict[str, pl.DataFrame] = {}
    quarantined: dict[str, pl.DataFrame] = {}
    notes: dict[str, dict[str, int]] = {}
    accepted["items"], quarantined["items"], notes["items"] = _validate_items(raw["items"], dd, manifest, cfg, now, earlier["items"])
    accepted["users"], quarantined["users"], notes["users"] = _validate_users(raw["users"], earlier["users"])
    for table, fn in (("interactions", _validate_interactions), ("reviews", _validate_reviews)):
        accepted[table], quarantined[table], notes[table] = fn(raw[table], accepted["users"], accepted["items"], cfg, now, earlier[table])

    tables = {}
    for table in TABLES:
        reasons = quarantined[table].group_by("reason").len().sort("reason")
        tables[table] = TableReport(
            table=table,
            rows_in=raw[table].height,
            accepted=accepted[table].height,
            quarantined=quarantined[table].height,
            reasons=dict(zip(reasons["reason"].to_list(), reasons["len"].to_list(), strict=True)),
            notes=notes[table],
        )
        if not tables[table].reconciled:  # pragma: no cover - an invariant of _split
            raise AssertionError(f"{table}: rows in != accepted + quarantined")
    config = {"min_ts": cfg.min_ts.isoformat(), "max_future": str(cfg.max_future), "check_images": cfg.check_images}
    if saved:  # what the report covers: the images were decoded if the saved validation did
        config["check_images"] = cfg.check_images or bool(saved[1].get("check_images"))
    report = ValidationReport(dataset=str(dd.root), tables=tables, config=config, fingerprint=manifest.fingerprint)
    if write:
        _write_validation(dd, report, quarantined, report_text, fresh)
    return ValidatedDataset(dd, manifest, accepted, quarantined, report)


def load_dataset(root: str | os.PathLike[str], check_images: bool = False) -> ValidatedDataset:
    """The loader every job uses: validated tables (images checked for existence, not decoded)."""
    return validate_dataset(root, ValidationConfig(check_images=check_images), write=True)
