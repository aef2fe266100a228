"""Training curves from the JSON-lines log: one PNG with loss (train, valid) and greedy WER.

Reading the log file (rather than keeping curves in memory) means a resumed run plots its whole
history, and the plot can be redrawn for any experiment: ``python -m edgeasr.train.plot DIR``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_log", "read_log"]


def read_log(path: str | Path) -> list[dict]:
    """Records of a ``log.jsonl`` file; a truncated last line (killed run) is ignored."""
    records = []
    p = Path(path)
    if not p.is_file():
        return records
    for line in p.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_log(log_path: str | Path, out_png: str | Path) -> Path:
    """Draw train/valid loss (left) and valid WER % (right) against the optimizer step."""
    records = read_log(log_path)
    train = [r for r in records if r.get("kind") == "train"]
    valid = [r for r in records if r.get("kind") == "valid"]
    fig, (ax_loss, ax_wer) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train],
                     lw=0.8, label="train")
    for name in sorted({r["set"] for r in valid}):
        rs = [r for r in valid if r["set"] == name]
        ax_loss.plot([r["step"] for r in rs], [r["loss"] for r in rs], "o-", label=f"{name}")
        ax_wer.plot([r["step"] for r in rs], [100 * r["wer"] for r in rs], "o-", label=name)
    ax_loss.set(xlabel="step", ylabel="loss", title="loss")
    ax_wer.set(xlabel="step", ylabel="WER %", title="greedy WER")
    for ax in (ax_loss, ax_wer):
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend()
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


if __name__ == "__main__":
    exp = Path(sys.argv[1])
    print(plot_log(exp / "log.jsonl", exp / "curves.png"))
