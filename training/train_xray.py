"""Train the shipped X-ray model on synthetic images and export it as ONNX with its metadata.

Run from the repository root (needs the ``train`` extra, torch)::

    python -m training.train_xray --out models/xray-cnn-v1.onnx

Seeds 0..N-1 train, 1,000,000.. validate (thresholds are chosen there), 2,000,000.. are held
out for ``bench/model_eval.py``. Same seeds and versions → same weights and the same file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

from simulation.xray_synth import THREAT_CLASSES, PreprocessSpec
from training import onnx_export, thresholds
from training.data import INPUT_SPEC, Split, render_split
from training.net import XrayNet, fold

VAL_FIRST_SEED = 1_000_000
TEST_FIRST_SEED = 2_000_000
#: Rendered images are cached outside the working tree (``make clean`` removes var/).
DEFAULT_CACHE = Path.home() / ".cache" / "cargogate" / "xray"

app = typer.Typer(add_completion=False, help=__doc__)
console = Console()


def _standardise(x: npt.NDArray[np.float32], spec: PreprocessSpec) -> npt.NDArray[np.float32]:
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    out: npt.NDArray[np.float32] = ((x - mean) / std).astype(np.float32)
    return out


def _render(name: str, first: int, count: int, workers: int, cache: Path | None) -> Split:
    with Progress(
        TextColumn(f"render {name}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(name, total=count)
        return render_split(
            first,
            count,
            workers=workers,
            cache_dir=cache,
            progress=lambda n: bar.advance(task, n),
        )


def _score_onnx(model_bytes: bytes, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    out = [session.run(["scores"], {"image": x[i : i + 256]})[0] for i in range(0, len(x), 256)]
    return np.concatenate(out).astype(np.float32)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Where to write the ONNX model.")] = Path(
        "models/xray-cnn-v1.onnx"
    ),
    train_count: Annotated[int, typer.Option(help="Training images (seeds 0..N-1).")] = 12000,
    val_count: Annotated[int, typer.Option(help="Validation images, for thresholds.")] = 3000,
    epochs: Annotated[int, typer.Option(help="Passes over the training images.")] = 24,
    batch_size: Annotated[int, typer.Option(help="Images per optimiser step.")] = 64,
    lr: Annotated[float, typer.Option(help="Peak learning rate (one-cycle schedule).")] = 5e-3,
    seed: Annotated[int, typer.Option(help="Seed for weight init and batch order.")] = 7,
    workers: Annotated[int, typer.Option(help="Processes that render images.")] = 2,
    cache_dir: Annotated[
        Path, typer.Option(help="Where rendered images are cached between runs.")
    ] = DEFAULT_CACHE,
    no_cache: Annotated[bool, typer.Option(help="Render afresh and cache nothing.")] = False,
    target_recall: Annotated[
        float, typer.Option(help="Validation recall each alarm threshold must keep.")
    ] = 0.995,
) -> None:
    """Render the synthetic data, train the CNN, choose thresholds on validation, export ONNX."""
    started = time.perf_counter()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    cache = None if no_cache else cache_dir
    train_split = _render("train", 0, train_count, workers, cache)
    val_split = _render("validation", VAL_FIRST_SEED, val_count, workers, cache)
    rendered = time.perf_counter()

    mean = tuple(float(m) for m in train_split.x.mean(axis=(0, 2, 3)))
    std = tuple(float(s) for s in train_split.x.std(axis=(0, 2, 3)))
    spec = PreprocessSpec(
        INPUT_SPEC.channels,
        INPUT_SPEC.height,
        INPUT_SPEC.width,
        True,
        tuple(round(m, 6) for m in mean),
        tuple(round(s, 6) for s in std),
    )
    x_train = torch.from_numpy(_standardise(train_split.x, spec))
    y_train = torch.from_numpy(train_split.y)
    x_val = _standardise(val_split.x, spec)

    net = XrayNet(spec.channels, len(THREAT_CLASSES))
    steps_per_epoch = len(x_train) // batch_size
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=lr, total_steps=epochs * steps_per_epoch
    )
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.full((len(THREAT_CLASSES),), 2.0))
    order = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        perm = torch.randperm(len(x_train), generator=order)
        total = 0.0
        with Progress(
            TextColumn(f"epoch {epoch + 1}/{epochs}"),
            BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("train", total=steps_per_epoch, loss=0.0)
            for step in range(steps_per_epoch):
                idx = perm[step * batch_size : (step + 1) * batch_size]
                xb, yb = x_train[idx], y_train[idx]
                flips = int(torch.randint(0, 4, (1,), generator=order).item())
                if flips & 1:
                    xb = xb.flip(3)
                if flips & 2:
                    xb = xb.flip(2)
                loss = loss_fn(net(xb), yb)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item()
                bar.update(task, advance=1, loss=total / (step + 1))
    trained = time.perf_counter()

    folded = fold(net)
    placeholder = {name: {"alarm": 0.5, "clear": 0.1} for name in THREAT_CLASSES}
    draft = onnx_export.build_model(folded, spec, THREAT_CLASSES, placeholder)
    val_scores = _score_onnx(draft.SerializeToString(), x_val)
    chosen = {
        name: thresholds.choose(val_scores[:, k], val_split.y[:, k], target_recall=target_recall)
        for k, name in enumerate(THREAT_CLASSES)
    }
    model = onnx_export.build_model(folded, spec, THREAT_CLASSES, chosen)
    onnx_export.save(model, out)

    table = Table(title=f"validation (seeds {VAL_FIRST_SEED}..{VAL_FIRST_SEED + val_count - 1})")
    for column in ("class", "n", "alarm", "clear", "recall", "false alarm"):
        table.add_column(column)
    for k, name in enumerate(THREAT_CLASSES):
        recall, false_alarm = thresholds.recall_and_false_alarm(
            val_scores[:, k], val_split.y[:, k], chosen[name]["alarm"]
        )
        table.add_row(
            name,
            str(int(val_split.y[:, k].sum())),
            f"{chosen[name]['alarm']:.4f}",
            f"{chosen[name]['clear']:.4f}",
            f"{recall:.4f}",
            f"{false_alarm:.4f}",
        )
    console.print(table)
    version = json.loads({p.key: p.value for p in model.metadata_props}["cargogate.version"])
    console.print(
        f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, version {version}); "
        f"render {rendered - started:.0f} s, train {trained - rendered:.0f} s, "
        f"total {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    app()
