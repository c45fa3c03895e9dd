"""Plots of a run, from its CSV log."""

from __future__ import annotations

from pathlib import Path


def plot_curve(csv_file: Path, key: str, out: Path) -> None:
    """The training curves, from the CSV log, as a PNG: one panel each for the loss (training
    and validation), the learning rate, the monitored metric ``key`` and, when logged, the
    validation accuracy (with ``val/acc_most_frequent``, the unigram baseline of masked-LM
    pretraining), per step."""
    import csv

    if not csv_file.is_file():
        return
    series: dict[str, dict[int, float]] = {}
    with open(csv_file, newline="") as f:
        for row in csv.DictReader(f):
            for name, value in row.items():
                if value and row.get("step") and name not in ("step", "epoch"):
                    try:  # a resumed run's later row wins
                        series.setdefault(name, {})[int(row["step"])] = float(value)
                    except ValueError:
                        continue
    panels = [["train/loss", "val/loss"], ["train/lr"], [key]]
    if "val/acc" in series and key != "val/acc":
        panels.append(["val/acc", "val/acc_most_frequent"])
    panels = [[k for k in p if len(series.get(k, {})) >= 2] for p in panels]
    panels = [p for p in panels if p]
    if not panels:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, names in zip(axes[0], panels, strict=True):
        for name in names:
            steps = sorted(series[name])
            style = {"marker": "o", "markersize": 3} if name.startswith("val/") else {}
            ax.plot(steps, [series[name][s] for s in steps], label=name, **style)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(names[0].split("/")[-1] if len(names) > 1 else names[0])
        values = [v for n in names for v in series[n].values()]
        if min(values) > 0 and max(values) / min(values) > 100:  # e.g. perplexity
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
