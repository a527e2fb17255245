"""The MLflow pyfunc wrapper of a stylerec two-tower bundle (logged as "model from code").

``predict`` takes a DataFrame with a ``user_id`` column and returns each user's top-``k``
items (params ``{"k": 10}``), scored at the dataset's test cutoff (a deploy-mode model, trained
on every event: just after the last event). Its signature and
input example are given where it is logged (pipelines/tracking.py).
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import set_model


class StyleRecModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from data.validate import load_dataset
        from recsys.bundle import is_deploy, read_bundle_config
        from recsys.serving import load_model

        folder = context.artifacts["bundle"]
        meta = read_bundle_config(folder)
        lm = load_model(folder, "pyfunc", load_dataset(meta["dataset_path"]))
        self.fs, self.recommender = lm.fs, lm.recommender
        self.time = lm.query_time if is_deploy(meta) else self.fs.time_of("test")
        self.row = {u: i for i, u in enumerate(self.fs.user_ids.tolist())}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from recsys.evaluate import recommend

        from pipelines.tracking import DEFAULT_K

        k = int((params or {}).get("k", DEFAULT_K))
        unknown = [u for u in model_input["user_id"] if u not in self.row]
        if unknown:
            raise ValueError(f"unknown user id(s) {unknown[:5]}")
        users = np.array([self.row[u] for u in model_input["user_id"]], np.int64)
        top = recommend(self.recommender, self.fs, users, self.time, k, mask_seen=True)
        return pd.DataFrame(
            {
                "user_id": np.repeat(model_input["user_id"].to_numpy(), k),
                "rank": np.tile(np.arange(1, k + 1), len(users)),
                "item_id": self.fs.items.ids[top.ravel()],
            }
        )


set_model(StyleRecModel())
