"""Pieces every experiment runner shares: atomic file writing, JSON, model state, mean ± std, loss curves.

Every output file is written atomically (a temporary file beside it, then os.replace), so an
interrupted run never leaves a torn file behind.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np

from ivae_ext.distributed import is_main_process


def write_atomic(path: str, write) -> None:
    """Call write(tmp_path) for a temporary file beside `path`, then move it into place. In a
    distributed run only rank 0 writes (the others return at once)."""
    if not is_main_process():
        return
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    """`obj` as indented JSON (numpy scalars as floats), written atomically."""

    def _write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, default=float)
            f.write("\n")

    write_atomic(path, _write)


def write_text(path: str, text: str) -> None:
    """`text` as it is (no newline added), written atomically."""

    def _write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    write_atomic(path, _write)


def load_json(path: str):
    with open(path) as f:
        return json.load(f)


def save_state_dict_atomic(module_or_state, path: str) -> None:
    """torch.save a module's state_dict (or a state dict itself) atomically."""
    from ivae_ext.training import save_atomic

    state = module_or_state.state_dict() if hasattr(module_or_state, "state_dict") else module_or_state
    save_atomic(state, path)


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for a single value)."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def plot_curves(path: str, history_epochs: list, title: str, metric_key: str | None = None,
                metric_label: str | None = None, extra_series: dict | None = None,
                metric_ylim: tuple | None = None) -> None:
    """Training loss per epoch (symlog) on the left and, with `metric_key`, that metric on the right.

    history_epochs: the per-epoch records of ``ivae_ext.fit`` (each with "epoch" and "loss"; the
    metric, when given, under `metric_key`, None where it was not computed). extra_series: more
    curves for the loss panel, {label: key of the epoch records, or a list of per-epoch values};
    with it the panel gets a legend. metric_ylim: fixed y-limits of the metric panel (e.g. (0, 1)),
    applied when some epoch has the metric. The PNG is written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history_epochs]
    if metric_key is not None:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    else:
        fig, ax1 = plt.subplots(1, 1, figsize=(4.8, 3.2))
    ax1.plot(epochs, [r["loss"] for r in history_epochs], marker=".",
             label="training loss" if extra_series else None)
    for k, (label, series) in enumerate((extra_series or {}).items()):
        values = [r.get(series) for r in history_epochs] if isinstance(series, str) else list(series)
        points = [(e, v) for e, v in zip(epochs, values) if v is not None]
        if points:
            ax1.plot(*zip(*points), marker=".", color=f"C{k + 2}", label=label)
    if extra_series:
        ax1.legend(fontsize=8)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss (symlog)")
    ax1.set_yscale("symlog")  # the first epochs would otherwise flatten the rest
    if metric_key is not None:
        values = [r.get(metric_key) for r in history_epochs]
        if any(v is not None for v in values):
            ax2.plot(epochs, values, marker=".", color="C1")
            if metric_ylim is not None:
                ax2.set_ylim(*metric_ylim)
        ax2.set_xlabel("epoch")
        ax2.set_ylabel(metric_label or metric_key)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)


def run_in_processes(worker, work: list, processes: int, on_result=None) -> dict:
    """Run worker(arg) for every (key, arg) in `work`, in order, on `processes` spawned processes
    (in this process when processes <= 1); returns {key: result} and calls on_result(key, result)
    as each finishes. `worker` must be importable (a module-level function)."""
    results: dict = {}
    if processes <= 1:
        for key, arg in work:
            results[key] = worker(arg)
            if on_result:
                on_result(key, results[key])
        return results
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(worker, arg): key for key, arg in work}
        for future in as_completed(futures):
            key = futures[future]
            results[key] = future.result()
            if on_result:
                on_result(key, results[key])
    return results


def check_int_fields(obj, names, minimum: int) -> None:
    """ValueError naming the first of obj's fields `names` that is not an int >= minimum (bools refused)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def check_min_improvement(value) -> None:
    if not (isinstance(value, (int, float)) and 0 <= value < float("inf")):
        raise ValueError(f"min_improvement must be a finite number >= 0, got {value!r}")


def finished_or_run(out: str, resume: bool, run) -> dict:
    """One run of a reproduction in its worker: the metrics.json already in `out` when resuming a
    finished run, else run() — on one thread (the runs themselves are the parallelism)."""
    import torch

    torch.set_num_threads(1)
    done = os.path.join(out, "metrics.json")
    if resume and os.path.exists(done):
        return load_json(done)
    return run()


class SelectionByValidation:
    """Model selection and early stopping on a validation loss, kept in OUT/best.pt: the parameters
    of the lowest value and the stopping rule's state together, so that a resumed run (resume=True
    when its checkpoint exists) continues both where they were."""

    def __init__(self, out: str, patience: int, min_improvement: float, resume: bool):
        import torch

        from ivae_ext.training import EarlyStopping

        self.path = os.path.join(out, "best.pt")
        self.saved = {"state": None, "stopping": EarlyStopping(patience, min_improvement)}
        if resume and os.path.exists(self.path):
            self.saved = torch.load(self.path, weights_only=False)

    @property
    def stopping(self):
        return self.saved["stopping"]

    @property
    def state(self) -> dict:
        return self.saved["state"]

    def update(self, epoch: int, model, value: float) -> bool:
        """Record the validation loss of `epoch` (keeping a copy of model's parameters when it is the
        lowest so far) and save; returns whether training should stop."""
        import copy

        is_best, stop = self.stopping.update(epoch, value)
        if is_best:
            self.saved["state"] = copy.deepcopy(model.state_dict())
        save_state_dict_atomic(self.saved, self.path)
        return stop
