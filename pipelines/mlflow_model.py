"""The MLflow pyfunc wrapper of a stylerec two-tower bundle (logged as "model from code").

``predict`` takes a DataFrame with a ``user_id`` column and returns each user's top-``k``
items (params ``{"k": 10}``), scored at the dataset's test cutoff.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import set_model


class StyleRecModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from data.validate import load_dataset
        from recsys.bundle import load_for_dataset, read_bundle_config
        from recsys.train import TwoTowerRecommender

        folder = context.artifacts["bundle"]
        ds = load_dataset(read_bundle_config(folder)["dataset_path"])
        model, self.fs = load_for_dataset(folder, ds)
        self.recommender = TwoTowerRecommender(model, self.fs)
        self.row = {u: i for i, u in enumerate(self.fs.user_ids.tolist())}

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from recsys.evaluate import recommend

        k = int((params or {}).get("k", 10))
        unknown = [u for u in model_input["user_id"] if u not in self.row]
        if unknown:
            raise ValueError(f"unknown user id(s) {unknown[:5]}")
        users = np.array([self.row[u] for u in model_input["user_id"]], np.int64)
        time = self.fs.time_of("test")
        top = recommend(self.recommender, self.fs, users, time, k, mask_seen=True)
        return pd.DataFrame(
            {
                "user_id": np.repeat(model_input["user_id"].to_numpy(), k),
                "rank": np.tile(np.arange(1, k + 1), len(users)),
                "item_id": self.fs.items.ids[top.ravel()],
            }
        )


set_model(StyleRecModel())
