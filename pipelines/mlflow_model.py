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
        from data.split import load_or_create_split
        from data.validate import load_dataset
        from recsys.bundle import feature_config_from, load_bundle, read_bundle_config
        from recsys.features import build_features
        from recsys.train import TwoTowerRecommender

        folder = context.artifacts["bundle"]
        meta = read_bundle_config(folder)
        ds = load_dataset(meta["dataset_path"])
        fs = build_features(ds, load_or_create_split(ds), feature_config_from(meta))
        model, self.fs = load_bundle(folder, fs)
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
