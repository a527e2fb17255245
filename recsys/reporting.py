"""Offline-evaluation results for people: the metrics table and the figures of a run."""

from __future__ import annotations

import numpy as np

SLICES = ("all", "warm_items", "cold_items", "warm_users", "cold_users")


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def format_metrics(results: dict[str, dict[str, dict[str, float]]], k: int = 50, slices=SLICES) -> str:
    header = f"{'model':<24}" + "".join(f"{s + f' R@{k}':>17}" for s in slices) + f"{'NDCG@' + str(k):>10}{'cover@' + str(k):>10}{'style@' + str(k):>10}"
    lines = [header]
    for model, res in results.items():
        row = f"{model:<24}" + "".join(f"{res.get(s, {}).get(f'recall@{k}', float('nan')):>17.4f}" for s in slices)
        a = res.get("all", {})
        row += f"{a.get(f'ndcg@{k}', float('nan')):>10.4f}{a.get(f'coverage@{k}', float('nan')):>10.3f}{a.get(f'style_consistency@{k}', float('nan')):>10.3f}"
        lines.append(row)
    return "\n".join(lines)


def training_curve(history):
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    epochs = [h.epoch for h in history]
    ax[0].plot(epochs, [h.loss for h in history], marker="o")
    ax[0].set(title="training loss", xlabel="epoch")
    ax[1].plot(epochs, [h.val_recall_50 for h in history], marker="o", color="tab:green")
    ax[1].set(title="validation Recall@50", xlabel="epoch")
    fig.tight_layout()
    return fig


def recall_by_slice_figure(results: dict[str, dict[str, dict[str, float]]], k: int = 50):
    plt = pyplot()
    models = list(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(models)), 3.5))
    width = 0.8 / len(SLICES)
    for j, sl in enumerate(SLICES):
        values = [results[m].get(sl, {}).get(f"recall@{k}", 0.0) for m in models]
        ax.bar(np.arange(len(models)) + j * width, values, width, label=sl)
    ax.set_xticks(np.arange(len(models)) + 0.4, models, rotation=20)
    ax.set(title=f"Recall@{k} by slice", ylabel=f"recall@{k}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
