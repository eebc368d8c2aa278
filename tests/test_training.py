"""fit(): exact resume, NaN stop, atomic checkpoints."""

import os
import warnings

import pytest
import torch

from ivae_ext import fit
from ivae_ext.data import make_nonlinear_ica
from ivae_ext.models import IVAE
from ivae_ext.training import EarlyStopping, NaNLossError

warnings.filterwarnings("ignore", category=RuntimeWarning, message=".*compiled extension.*")


def _setup():
    d = make_nonlinear_ica(n_sources=2, n_segments=4, per_segment=40, mixing_layers=2, seed=0)
    torch.manual_seed(0)
    return IVAE(2, 2, 4, hidden_dim=8), d.x, d.u


@pytest.mark.parametrize("schedule", ["plateau", "cosine"])
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, schedule):
    kw = dict(epochs=4, batch_size=16, lr=1e-2, seed=5, progress=False, schedule=schedule)
    model, x, u = _setup()
    full = fit(model, x, u, **kw)
    expected = {k: v.clone() for k, v in model.state_dict().items()}

    ckpt = str(tmp_path / "ckpt.pt")
    model2, _, _ = _setup()
    fit(model2, x, u, checkpoint=ckpt, max_epochs_this_call=2, **kw)
    model3, _, _ = _setup()  # a fresh process would rebuild the model from scratch
    torch.manual_seed(123)  # and have unrelated RNG state
    resumed = fit(model3, x, u, checkpoint=ckpt, resume=True, **kw)

    for k, v in model3.state_dict().items():
        assert torch.equal(v, expected[k]), f"parameter {k} differs after resume"
    assert [r["loss"] for r in resumed["epochs"]] == [r["loss"] for r in full["epochs"]]


def test_checkpoint_is_written_atomically(tmp_path):
    model, x, u = _setup()
    ckpt = tmp_path / "ckpt.pt"
    fit(model, x, u, epochs=1, batch_size=16, progress=False, checkpoint=str(ckpt))
    assert ckpt.exists()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == [], "temporary file left behind"
    assert torch.load(ckpt, weights_only=False)["epoch"] == 1


def test_resume_without_checkpoint_is_an_error(tmp_path):
    model, x, u = _setup()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fit(model, x, u, epochs=1, resume=True, checkpoint=str(tmp_path / "none.pt"), progress=False)


def test_nan_loss_stops_with_a_clear_message():
    model, x, u = _setup()
    x = torch.as_tensor(x).clone()
    x[3, 0] = float("nan")
    with pytest.raises(NaNLossError, match=r"loss is nan at epoch 1.*lower the learning rate"):
        fit(model, x, u, epochs=1, batch_size=400, progress=False)


def test_mismatched_lengths_are_an_error():
    model, x, u = _setup()
    with pytest.raises(ValueError, match="same number of rows"):
        fit(model, x, u[:10], epochs=1, progress=False)


def test_hook_can_stop_training_and_a_stopped_run_stays_stopped(tmp_path):
    kw = dict(epochs=6, batch_size=16, lr=1e-2, seed=5, progress=False, schedule="none")

    def stop_at_3(epoch, model, record):
        if epoch == 3:
            record["stop"] = True
        return False

    model, x, u = _setup()
    ckpt = str(tmp_path / "ckpt.pt")
    history = fit(model, x, u, checkpoint=ckpt, on_epoch_end=stop_at_3, **kw)
    assert [r["epoch"] for r in history["epochs"]] == [1, 2, 3] and history["epochs"][-1]["stop"]
    stopped = {k: v.clone() for k, v in model.state_dict().items()}
    model2, _, _ = _setup()
    resumed = fit(model2, x, u, checkpoint=ckpt, resume=True, **kw)  # trains no further
    assert [r["epoch"] for r in resumed["epochs"]] == [1, 2, 3]
    assert all(torch.equal(v, stopped[k]) for k, v in model2.state_dict().items())


def test_sparse_checkpoints_resume_bit_identically(tmp_path):
    kw = dict(epochs=5, batch_size=16, lr=1e-2, seed=5, progress=False, schedule="cosine")
    model, x, u = _setup()
    full = fit(model, x, u, **kw)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = str(tmp_path / "ckpt.pt")
    model2, _, _ = _setup()
    fit(model2, x, u, checkpoint=ckpt, checkpoint_every=2, max_epochs_this_call=3, **kw)
    assert torch.load(ckpt, weights_only=False)["epoch"] == 3  # the call's last epoch is always written
    model3, _, _ = _setup()
    resumed = fit(model3, x, u, checkpoint=ckpt, resume=True, checkpoint_every=2, **kw)
    assert all(torch.equal(v, expected[k]) for k, v in model3.state_dict().items())
    assert [r["loss"] for r in resumed["epochs"]] == [r["loss"] for r in full["epochs"]]
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1"):
        fit(model3, x, u, checkpoint_every=0, **kw)


def test_early_stopping_selects_the_lowest_and_stops_after_patience_without_real_progress():
    stop = EarlyStopping(patience=20, min_improvement=0.1)
    # a real gain at 10, then tiny gains (< 0.1 each) that are selected but do not restart the patience
    values = {10: 5.0, 20: 4.95, 30: 4.92, 40: 4.91}
    seen = [stop.update(e, v) for e, v in values.items()]
    assert seen == [(True, False), (True, False), (True, True), (True, True)]
    assert (stop.best_epoch, stop.best_value) == (40, 4.91)
    # a gain above min_improvement restarts it
    stop = EarlyStopping(patience=20, min_improvement=0.1)
    assert [stop.update(e, v) for e, v in ((10, 5.0), (20, 4.8), (30, 4.85), (40, 4.79))] == [
        (True, False), (True, False), (False, False), (True, True)]
    assert stop.best_epoch == 40


def test_early_stopping_with_patience_zero_never_stops():
    stop = EarlyStopping(patience=0)
    assert all(not stop.update(e, 1.0)[1] for e in range(1, 100))
    assert stop.best_epoch == 1
