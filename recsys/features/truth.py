"""What counts as relevant when a fold is evaluated."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recsys.features.config import event_code

if TYPE_CHECKING:
    from recsys.features.featureset import FeatureSet


def truth(fs: FeatureSet, fold: str, mask_seen: bool = True) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """(user rows, per-user arrays of relevant item rows, query time) for evaluation on ``fold``.

    Relevant = an ``eval_events`` event in the fold. With ``mask_seen``, items the user
    interacted with before the fold are left out of the truth (they are masked from
    recommendations too).
    """
    start = fs.time_of(fold)
    codes = [event_code(e) for e in fs.config.eval_events]
    in_fold = (fs.ev_fold == fold) & np.isin(fs.ev_event, codes)
    df = pl.DataFrame({"u": fs.ev_user[in_fold], "i": fs.ev_item[in_fold]}).unique()
    if mask_seen:
        seen = pl.DataFrame({"u": fs.ev_user[fs.ev_ts < start], "i": fs.ev_item[fs.ev_ts < start]}).unique()
        df = df.join(seen, on=["u", "i"], how="anti")
    grouped = df.group_by("u").agg(pl.col("i")).sort("u")
    users = grouped["u"].to_numpy()
    return users, [np.asarray(x, np.int64) for x in grouped["i"].to_list()], np.full(len(users), start, np.int64)
