"""Training loop for the two-tower model (in the spirit of nanoGPT's: one readable loop).

Deterministic given the seed; validation Recall@50 after every epoch on the validation
slice of the split; early stopping; a checkpoint per epoch that ``resume`` continues from.
Weights are saved with safetensors; optimizer state with ``torch.save`` and read back
with ``weights_only=True`` (no pickle).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from data.io import atomic_path, write_json
from recsys.evaluate import EvalConfig, evaluate
from recsys.features import Examples, FeatureSet
from recsys.losses import sampled_softmax_loss
from recsys.model import TwoTower, TwoTowerConfig, Vocab, user_batch_tensors


KEEP_CHECKPOINTS = ("last_and_best", "all")
ALL_FOLDS = ("train", "val", "test")  # deploy mode trains on every fold: the whole timeline


def prune_checkpoints(folder: Path, keep_epochs: set[int]) -> None:
    """Delete the ``epoch-NNN.*`` files of every epoch not in ``keep_epochs`` (call after
    state.json names the newest checkpoint, which must be among them)."""
    for path in folder.glob("epoch-*.*"):
        try:
            epoch = int(path.name[len("epoch-"):].split(".", 1)[0])
        except ValueError:
            continue
        if epoch not in keep_epochs:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-6
    patience: int = 3
    seed: int = 0
    extra_negatives: int = 0  # uniformly sampled negatives per batch, on top of in-batch ones
    val_users: int | None = 3000
    threads: int | None = None
    max_batches_per_epoch: int | None = None  # for smoke tests and benchmarks
    refit: bool = True  # after early stopping, retrain on train + validation for the chosen epochs
    sparse_lr: float = 0.05  # distributed training: Adagrad step of the fused (sharded) embedding tables
    keep_checkpoints: str = "last_and_best"  # or "all": every epoch's checkpoint files stay on disk

    def __post_init__(self) -> None:
        if self.keep_checkpoints not in KEEP_CHECKPOINTS:
            raise ValueError(f"keep_checkpoints must be one of {list(KEEP_CHECKPOINTS)}, got {self.keep_checkpoints!r}")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class EpochLog:
    epoch: int
    loss: float
    val_recall_50: float
    seconds: float
    examples_per_s: float


@dataclass
class TrainResult:
    model: TwoTower
    features: FeatureSet  # the features the final model was trained with (its id vocabulary)
    best_epoch: int
    best_val_recall_50: float
    history: list[EpochLog] = field(default_factory=list)
    stopped_early: bool = False


class TwoTowerRecommender:
    """Scores the catalogue with a trained two-tower model (the ``Recommender`` protocol)."""

    def __init__(self, model: TwoTower, fs: FeatureSet, name: str = "two-tower"):
        self.model, self.fs, self.name = model, fs, name
        self._items: torch.Tensor | None = None
        self._users: tuple[int, bytes, torch.Tensor] | None = None  # the last user_matrix: (time, users, vectors)

    def item_matrix(self) -> torch.Tensor:
        if self._items is None:
            self.model.eval()
            with torch.no_grad():
                rows = torch.arange(self.fs.items.n)
                self._items = torch.cat([self.model.item_embeddings(rows[i : i + 8192]) for i in range(0, len(rows), 8192)])
        return self._items

    def user_matrix(self, users: np.ndarray, time: int) -> torch.Tensor:
        """The users' vectors at ``time``; the last call's are kept (a copy returned): the ranking
        stage asks for the same users twice per batch, for the two-tower source and its feature.
        Like the item matrix, they assume the model no longer trains."""
        users = np.asarray(users, np.int64)
        key = (int(time), users.tobytes())
        if self._users is None or self._users[:2] != key:
            self.model.eval()
            with torch.no_grad():
                self._users = (*key, self.model.user_embeddings(user_batch_tensors(self.fs.user_batch(users, np.full(len(users), time)))))
        return self._users[2].clone()

    def scores(self, users: np.ndarray, time: int) -> np.ndarray:
        return (self.user_matrix(users, time) @ self.item_matrix().T).numpy()


def build_model(fs: FeatureSet, config: TwoTowerConfig, seed: int) -> TwoTower:
    torch.manual_seed(seed)
    return TwoTower(config, Vocab.of(fs), TwoTower.item_tables(fs))


def save_weights(model: TwoTower, path: Path) -> None:
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))


def load_weights(model: TwoTower, path: Path) -> None:
    model.load_state_dict(load_file(str(path)))


@dataclass
class TrainingRun:
    """What one training pass holds: the module the steps run through (the model itself,
    or its ``DistributedModelParallel`` wrapper), the model, and the optimizer(s)."""

    module: torch.nn.Module
    model: TwoTower
    optimizer: torch.optim.Optimizer


class Trainer:
    """Single-process trainer. ``DistributedTrainer`` (recsys/distributed_train.py) overrides
    the hooks marked below and keeps the loop, the early stopping and the refit."""

    is_main = True  # writes checkpoints and reports epochs

    def __init__(
        self,
        fs: FeatureSet,
        model_config: TwoTowerConfig,
        train_config: TrainConfig,
        checkpoint_dir: Path | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None,
        progress: bool = True,
    ):
        self.fs, self.mcfg, self.tcfg = fs, model_config, train_config
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.on_epoch = on_epoch
        self.progress = progress

    # -- hooks ---------------------------------------------------------------------

    def start(self, fs: FeatureSet) -> TrainingRun:
        model = build_model(fs, self.mcfg, self.tcfg.seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.tcfg.lr, weight_decay=self.tcfg.weight_decay)
        return TrainingRun(model, model, optimizer)

    def full_model(self, run: TrainingRun) -> TwoTower:
        """The trained model as one plain module (here: the model itself)."""
        return run.model

    def validation_recall(self, model: TwoTower) -> float:
        cfg = EvalConfig(fold="val", ks=(50,), max_users=self.tcfg.val_users, seed=self.tcfg.seed)
        res = evaluate(TwoTowerRecommender(model, self.fs), self.fs, cfg)
        return float(res["all"]["recall@50"]) if res else 0.0

    def step(self, run: TrainingRun, fs: FeatureSet, examples: Examples, idx: np.ndarray, log_q: torch.Tensor) -> float:
        """One optimizer step on the examples ``idx``; returns the batch loss."""
        cfg = self.tcfg
        users, items, times = examples.user[idx], examples.item[idx], examples.time[idx]
        batch = user_batch_tensors(fs.user_batch(users, times))
        item_rows = torch.from_numpy(items)
        user_vec, item_vec = run.module(batch, item_rows)
        neg_vec = neg_q = None
        if cfg.extra_negatives:
            neg_rows = torch.randint(0, fs.items.n, (cfg.extra_negatives,))
            neg_vec = run.model.item_embeddings(neg_rows, drop_ids=True)
            neg_q = torch.full((cfg.extra_negatives,), float(np.log(1.0 / fs.items.n)))
        loss = sampled_softmax_loss(user_vec, item_vec, item_rows, log_q[item_rows], self.mcfg.temperature, neg_vec, neg_q)
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        return loss.item()

    def save_checkpoint(self, run: TrainingRun, model: TwoTower, epoch: int, state: dict) -> None:
        """``model`` is ``full_model(run)``, already at hand in the loop."""
        if self.checkpoint_dir is None:
            return
        d = self.checkpoint_dir
        d.mkdir(parents=True, exist_ok=True)
        save_weights(model, d / f"epoch-{epoch:03d}.safetensors")
        with atomic_path(d / f"epoch-{epoch:03d}.optim.pt") as tmp:
            torch.save(run.optimizer.state_dict(), tmp)
        write_json(state, d / "state.json")  # last: names the newest complete checkpoint
        self.prune(state)

    def prune(self, state: dict) -> None:
        """Keep the last checkpoint (for --resume) and the best one, unless keep_checkpoints = "all"."""
        if self.tcfg.keep_checkpoints == "last_and_best":
            prune_checkpoints(self.checkpoint_dir, {state["epoch"], state["best_epoch"]})

    def load_checkpoint(self, run: TrainingRun) -> dict | None:
        state = self._checkpoint_state()
        if state is not None:
            epoch = state["epoch"]
            load_weights(run.model, self.checkpoint_dir / f"epoch-{epoch:03d}.safetensors")
            run.optimizer.load_state_dict(torch.load(self.checkpoint_dir / f"epoch-{epoch:03d}.optim.pt", weights_only=True))
        return state

    def save_best(self, model: TwoTower) -> None:
        if self.checkpoint_dir is not None and self.is_main:
            save_weights(model, self.checkpoint_dir / "best.safetensors")

    # -- the loop ------------------------------------------------------------------

    def _checkpoint_state(self) -> dict | None:
        if self.checkpoint_dir is None or not (self.checkpoint_dir / "state.json").is_file():
            return None
        return json.loads((self.checkpoint_dir / "state.json").read_text())

    def _batches(self, examples: Examples, epoch: int):
        rng = np.random.default_rng([self.tcfg.seed, epoch])
        order = rng.permutation(len(examples))
        bs = self.tcfg.batch_size
        n = len(order) // bs if len(order) >= bs else 1  # drop the ragged last batch
        if self.tcfg.max_batches_per_epoch:
            n = min(n, self.tcfg.max_batches_per_epoch)
        for b in range(n):
            yield order[b * bs : (b + 1) * bs]

    def fit(self, resume: bool = False) -> TrainResult:
        cfg = self.tcfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        fs = self.fs
        examples = fs.training_examples("train")
        if len(examples) == 0:
            raise ValueError("no training examples in the train fold")
        log_q = torch.from_numpy(fs.item_log_q(examples))
        run = self.start(fs)
        history: list[EpochLog] = []
        best_epoch, best_recall, bad_epochs, start_epoch = -1, -1.0, 0, 0
        state = self.load_checkpoint(run) if resume else None
        if state is not None:
            history = [EpochLog(**h) for h in state["history"]]
            best_epoch, best_recall, bad_epochs = state["best_epoch"], state["best_val_recall_50"], state["bad_epochs"]
            start_epoch = state["epoch"] + 1
        stopped = False
        best_state = None
        for epoch in range(start_epoch, cfg.epochs):
            if bad_epochs >= cfg.patience:
                stopped = True
                break
            loss, seen, seconds = self.run_epoch(run, fs, examples, log_q, epoch)
            model = self.full_model(run)
            recall = self.validation_recall(model)
            log = EpochLog(epoch, loss, recall, seconds, seen / max(seconds, 1e-9))
            history.append(log)
            if recall > best_recall:
                best_recall, best_epoch, bad_epochs = recall, epoch, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                self.save_best(model)
            else:
                bad_epochs += 1
            self.save_checkpoint(
                run, model, epoch,
                {"epoch": epoch, "best_epoch": best_epoch, "best_val_recall_50": best_recall, "bad_epochs": bad_epochs, "history": [asdict(h) for h in history]},
            )
            if self.on_epoch and self.is_main:
                self.on_epoch(log)
        model = self.full_model(run)
        if best_state is not None:
            model.load_state_dict(best_state)
        elif self.checkpoint_dir is not None and (self.checkpoint_dir / "best.safetensors").is_file():
            load_weights(model, self.checkpoint_dir / "best.safetensors")  # resumed after the best epoch
        if cfg.refit and best_epoch >= 0:
            model, fs = self._refit(best_epoch + 1)
        model.eval()
        if self.checkpoint_dir is not None and self.is_main:
            save_weights(model, self.checkpoint_dir / "final.safetensors")
        return TrainResult(model, fs, best_epoch, best_recall, history, stopped)

    def _refit(self, epochs: int) -> tuple[TwoTower, FeatureSet]:
        """Retrain from scratch on train + validation (ids of both in the vocabulary)."""
        model, fs, _ = self._train_on(("train", "val"), epochs, "refit")
        return model, fs

    def _train_on(self, folds: tuple[str, ...], epochs: int, desc: str, report: bool = False) -> tuple[TwoTower, FeatureSet, list[EpochLog]]:
        """Train from scratch for exactly ``epochs`` on the examples of ``folds``, with the
        ids of those folds in the vocabulary; no validation. With ``report`` every epoch goes
        to ``on_epoch`` (its validation Recall@50 NaN: there is none)."""
        fs = self.fs.with_vocab(folds)
        examples = fs.training_examples(folds)
        if len(examples) == 0:
            raise ValueError(f"no training examples in the {' + '.join(folds)} fold(s)")
        log_q = torch.from_numpy(fs.item_log_q(examples))
        run = self.start(fs)
        history: list[EpochLog] = []
        for epoch in range(epochs):
            loss, seen, seconds = self.run_epoch(run, fs, examples, log_q, epoch, desc=f"{desc} {epoch}")
            history.append(EpochLog(epoch, loss, float("nan"), seconds, seen / max(seconds, 1e-9)))
            if report and self.on_epoch and self.is_main:
                self.on_epoch(history[-1])
        return self.full_model(run), fs, history

    def fit_fixed(self, epochs: int, folds: tuple[str, ...] = ALL_FOLDS) -> TrainResult:
        """Deploy mode: train from scratch on every event of ``folds`` (default: the whole
        timeline, train + validation + test) for exactly ``epochs`` epochs, chosen by an
        evaluated run; no validation, no early stopping, no checkpoints to resume. Every
        user and item with an event in ``folds`` gets an id."""
        if epochs < 1:
            raise ValueError(f"a fixed-epoch run needs at least one epoch, got {epochs}")
        if self.tcfg.threads:
            torch.set_num_threads(self.tcfg.threads)
        model, fs, history = self._train_on(tuple(folds), epochs, "deploy", report=True)
        model.eval()
        if self.checkpoint_dir is not None and self.is_main:
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            save_weights(model, self.checkpoint_dir / "final.safetensors")
        return TrainResult(model, fs, epochs - 1, float("nan"), history)

    def run_epoch(self, run: TrainingRun, fs: FeatureSet, examples: Examples, log_q: torch.Tensor, epoch: int, desc: str | None = None) -> tuple[float, int, float]:
        """One pass over shuffled examples: (mean loss, examples seen, seconds)."""
        run.module.train()
        torch.manual_seed(self.tcfg.seed * 1000 + epoch)
        started = time.perf_counter()
        losses, seen = [], 0
        batches = list(self._batches(examples, epoch))
        show = self.progress and self.is_main
        for idx in tqdm(batches, desc=desc or f"epoch {epoch}", unit="batch", disable=not show or None, leave=False):
            losses.append(self.step(run, fs, examples, idx, log_q))
            seen += len(idx)
        return float(np.mean(losses)), seen, time.perf_counter() - started
