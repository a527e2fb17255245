"""Scale-out: TorchRec DistributedModelParallel under torchrun (2 ranks, gloo, CPU).

The training runs are real ``stylerec train --nproc N`` launches on the tiny StyleMart
preset; each writes its checkpoints, which the tests read back.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from data.split import load_or_create_split
from data.validate import load_dataset
from recsys.config import load_run_config
from recsys.distributed_train import DistributedTrainer
from recsys.features import build_features
from recsys.model import TwoTower, Vocab, user_batch_tensors
from recsys.sharding import SHARDED_TYPES, DistContext, parse_sharding
from recsys.losses import sampled_softmax_loss
from recsys.train import Trainer, TwoTowerRecommender, build_model

CONFIG = """
[model]
item_features = ["item_id", "category", "price", "popularity", "style", "text"]
user_features = ["user_id", "history", "user_style", "history_text", "user_text"]
[train]
epochs = 2
batch_size = 64
extra_negatives = 8
patience = 5
refit = false
[features]
# Item text without reviews, so dropping the reviews with the ids (the title-only vector
# standing in) changes nothing here. With reviews, the switch leaves a few dense gradient
# entries near AdamW's eps (1e-8), where the different summation order of 1 and 2 ranks
# (float noise, ~1e-7 relative at the first step: same masks, rows and gradients otherwise)
# becomes a different first update; the runs then drift apart by ~1e-4 in the loss, the
# size of the gradient-scale bugs these tests exist to catch.
review_text_weight = 0.0
"""
# measured on the tiny preset (200-event histories): loss ~8e-8 relative, cosine 0.9999998,
# Adagrad state up to ~4.5e-5 (t_user_id, t_history; ~3e-6 with 50-event histories);
# only the float summation order differs between 1 and 2 ranks
LOSS_RTOL = 1e-6
MIN_COSINE = 0.99999  # between the two runs' item embeddings, every item
STATE_RTOL = 1e-4  # the tables' Adagrad sums of squared gradients: a gradient scale off by N shows as N^2


def stylerec(workdir: Path, tracking: str, *args: str) -> str:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    proc = subprocess.run([sys.executable, "-m", "pipelines.cli", "--workdir", str(workdir), *args], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout


@pytest.fixture(scope="module")
def runs(tiny_embedded, tmp_path_factory):
    """One-process, two-rank, and two-rank-then-resumed-on-one-rank trainings."""
    base = tmp_path_factory.mktemp("dist")
    config = base / "full.toml"
    config.write_text(CONFIG)
    tracking = f"sqlite:///{base / 'mlflow.db'}"
    out = {}
    for name, steps in {
        "one": [["--nproc", "1"]],
        "two": [["--nproc", "2"]],
        "resumed": [["--nproc", "2", "--epochs", "1", "--sharding", "t_user_id=column_wise"], ["--nproc", "1", "--resume"]],
    }.items():
        logs = [stylerec(base / name, tracking, "train", str(tiny_embedded), "--config", str(config), *step) for step in steps]
        (ckpt,) = (base / name / "runs").glob("*/*-sharded")
        out[name] = {"ckpt": ckpt, "log": logs[-1], "first_log": logs[0]}
    out["tracking"], out["config"], out["base"] = tracking, config, base
    return out


def _history(ckpt: Path) -> list[float]:
    return [h["loss"] for h in json.loads((ckpt / "state.json").read_text())["history"]]


def _item_vectors(ckpt: Path, fs, config) -> torch.Tensor:
    model = TwoTower(config.model, Vocab.of(fs), TwoTower.item_tables(fs))
    model.load_state_dict(load_file(str(ckpt / "epoch-001.safetensors")))
    return TwoTowerRecommender(model, fs).item_matrix()


def test_two_ranks_match_one_process_and_resume_on_another_rank_count(runs, tiny_embedded):
    one, two, resumed = (_history(runs[k]["ckpt"]) for k in ("one", "two", "resumed"))
    assert len(one) == len(two) == len(resumed) == 2
    np.testing.assert_allclose(two, one, rtol=LOSS_RTOL)
    np.testing.assert_allclose(resumed, two, rtol=LOSS_RTOL)
    assert json.loads((runs["resumed"]["ckpt"] / "state.json").read_text())["world_size"] == 1

    ds = load_dataset(tiny_embedded)
    config = load_run_config(runs["config"])
    fs = build_features(ds, load_or_create_split(ds), config.features)
    vectors = {k: _item_vectors(runs[k]["ckpt"], fs, config) for k in ("one", "two", "resumed")}
    for k in ("two", "resumed"):
        cosine = (vectors[k] * vectors["one"]).sum(1)
        assert float(cosine.min()) >= MIN_COSINE, (k, float(cosine.min()))
        states = [load_file(str(runs[r]["ckpt"] / "epoch-001.sparse-optim.safetensors")) for r in ("one", k)]
        assert sorted(states[0]) == sorted(states[1])
        for key in states[0]:
            a, b = states[0][key], states[1][key]
            assert float((a - b).norm() / a.norm()) < STATE_RTOL, (k, key)
    # training moved the embeddings: the agreement is not that of two untrained models
    torch.manual_seed(config.train.seed)
    init = TwoTower(config.model, Vocab.of(fs), TwoTower.item_tables(fs))
    assert float((TwoTowerRecommender(init, fs).item_matrix() * vectors["one"]).sum(1).mean()) < 0.99


def _plain_pytorch_reference(fs, config, epochs: int) -> tuple[list[float], TwoTower]:
    """The distributed steps written out for one process without TorchRec sharding: whole
    global batches, torch's Adagrad on the embedding tables, AdamW on the rest, and the
    same per-global-batch draws of dropout masks and extra negatives."""
    mcfg, tcfg = config.model, config.train
    model = build_model(fs, mcfg, tcfg.seed)
    tables = [p for n, p in model.named_parameters() if ".embedding_bags." in n]
    dense = [p for n, p in model.named_parameters() if ".embedding_bags." not in n]
    optimizers = [torch.optim.Adagrad(tables, lr=tcfg.sparse_lr, eps=1e-8), torch.optim.AdamW(dense, lr=tcfg.lr, weight_decay=tcfg.weight_decay)]
    examples = fs.training_examples("train")
    log_q = torch.from_numpy(fs.item_log_q(examples))
    batches = Trainer(fs, mcfg, tcfg, progress=False)._batches
    gen, n_neg = torch.Generator(), tcfg.extra_negatives
    neg_q = torch.full((n_neg,), float(np.log(1.0 / fs.items.n)))
    model.train()
    history = []
    for epoch in range(epochs):
        gen.manual_seed(tcfg.seed * 1000 + epoch)
        losses = []
        for idx in batches(examples, epoch):
            b = len(idx)
            item_keep = torch.rand(b, generator=gen) >= mcfg.id_dropout
            user_keep = torch.rand(b, generator=gen) >= mcfg.user_id_dropout
            neg_rows = torch.randint(0, fs.items.n, (n_neg,), generator=gen)
            neg_keep = torch.rand(n_neg, generator=gen) >= mcfg.id_dropout
            batch = user_batch_tensors(fs.user_batch(examples.user[idx], examples.time[idx]))
            batch["keep_ids"] = user_keep
            items = torch.from_numpy(examples.item[idx])
            user_vec, item_vec = model(batch, torch.cat([items, neg_rows]), torch.cat([item_keep, neg_keep]))
            loss = sampled_softmax_loss(user_vec, item_vec[:b], items, log_q[items], mcfg.temperature, item_vec[b:], neg_q)
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            loss.backward()
            for opt in optimizers:
                opt.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
    return history, model.eval()


def test_two_ranks_match_a_plain_pytorch_reference(runs, tiny_embedded):
    ds = load_dataset(tiny_embedded)
    config = load_run_config(runs["config"])
    fs = build_features(ds, load_or_create_split(ds), config.features)
    history, model = _plain_pytorch_reference(fs, config, epochs=2)
    np.testing.assert_allclose(_history(runs["two"]["ckpt"]), history, rtol=LOSS_RTOL)
    reference = TwoTowerRecommender(model, fs).item_matrix()
    cosine = (reference * _item_vectors(runs["two"]["ckpt"], fs, config)).sum(1)
    assert float(cosine.min()) >= MIN_COSINE, float(cosine.min())


def test_rank_zero_prints_the_plan_tracks_and_registers(runs):
    log = runs["two"]["log"]
    assert "sharding plan (2 ranks, gloo)" in log and "registered stylerec version" in log
    mlflow.set_tracking_uri(runs["tracking"])
    run_id = log.split("MLflow run ")[1].split()[0]
    run = mlflow.get_run(run_id)
    assert run.data.params["world_size"] == "2" and run.data.params["backend"] == "gloo"
    plan = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/sharding_plan.json"))
    assert {"t_item_id", "t_user_id", "t_history", "t_category"} <= set(plan)
    assert {r for t in plan.values() for r in t["ranks"]} == {0, 1}, plan  # tables on both ranks
    assert all(t["sharding_type"] != "data_parallel" for t in plan.values())
    history = mlflow.tracking.MlflowClient().get_metric_history(run_id, "loss")
    assert [m.step for m in history] == [0, 1]  # once per epoch: only rank 0 logs


def test_sharding_override_reaches_the_planner(runs):
    mlflow.set_tracking_uri(runs["tracking"])
    run_id = runs["resumed"]["first_log"].split("MLflow run ")[1].split()[0]
    plan = json.loads(mlflow.artifacts.load_text(f"runs:/{run_id}/sharding_plan.json"))
    assert plan["t_user_id"]["sharding_type"] == "column_wise"
    assert mlflow.get_run(run_id).data.params["sharding"] == "t_user_id=column_wise"


def test_parse_sharding():
    tables = ["t_item_id", "t_user_id"]
    assert parse_sharding(None, tables) == {t: list(SHARDED_TYPES) for t in tables}
    assert parse_sharding("column_wise", tables) == {t: ["column_wise"] for t in tables}
    assert parse_sharding("t_user_id=table_wise", tables) == {"t_item_id": list(SHARDED_TYPES), "t_user_id": ["table_wise"]}
    with pytest.raises(ValueError, match="names table 't_users'"):
        parse_sharding("t_users=table_wise", tables)
    with pytest.raises(ValueError, match="data_parallel"):
        parse_sharding("t_user_id=data_parallel", tables)


def test_candidates_on_two_ranks_equal_one_process(runs, tiny_embedded):
    base, tracking = runs["base"], runs["tracking"]
    version = runs["two"]["log"].split("registered stylerec version ")[1].split(";")[0]
    outs = {}
    for name, extra in (("single", []), ("sharded", ["--nproc", "2"])):
        outs[name] = base / f"candidates-{name}"
        stylerec(base / "two", tracking, "candidates", str(tiny_embedded), "--model", f"models:/stylerec/{version}", "--k", "20", "--chunk-size", "40", "--explain", "--out", str(outs[name]), *extra)
    parts = sorted(p.name for p in outs["single"].glob("part-*.parquet"))
    assert len(parts) >= 4 and parts == sorted(p.name for p in outs["sharded"].glob("part-*.parquet"))
    for p in parts:
        assert (outs["single"] / p).read_bytes() == (outs["sharded"] / p).read_bytes(), p
    summaries = [json.loads((outs[n] / "_SUMMARY.json").read_text()) for n in ("single", "sharded")]
    for key in ("users", "parts", "parts_written", "rows", "catalogue_coverage", "mean_score"):
        assert summaries[0][key] == summaries[1][key], key


def test_batch_must_split_evenly_between_ranks(tiny_features):
    from recsys.model import TwoTowerConfig
    from recsys.train import TrainConfig

    ctx = DistContext(rank=0, world_size=3, local_world_size=3, backend="gloo", device=torch.device("cpu"))
    with pytest.raises(ValueError, match="batch_size = 64 is not divisible by the 3 ranks"):
        DistributedTrainer(tiny_features, TwoTowerConfig(), TrainConfig(batch_size=64), ctx)
