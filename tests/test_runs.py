"""The pieces every training command shares (ssl_inpaint/runs.py)."""

import pytest

from ssl_inpaint.errors import UserError
from ssl_inpaint.runs import stop_if_not_finite


def test_the_nan_stop_names_the_step_the_losses_the_fix_and_the_checkpoint(tmp_path):
    last = tmp_path / "last.pt"
    stop_if_not_finite({"loss": 0.5, "other": 1.0}, 3, last, "lower --lr")  # finite: nothing happens
    with pytest.raises(UserError, match=r"^non-finite loss at step 3 \(loss nan, other 1\); lower --lr; no checkpoint had been saved yet$"):
        stop_if_not_finite({"loss": float("nan"), "other": 1.0}, 3, last, "lower --lr")
    last.write_bytes(b"x")
    with pytest.raises(UserError, match=f"step 4 \\(loss inf\\); lower --lr; the last good checkpoint is kept: {last}$"):
        stop_if_not_finite({"loss": float("inf")}, 4, last, "lower --lr")
    with pytest.raises(UserError, match="step 5"):  # another process saw a NaN: every process stops
        stop_if_not_finite({"loss": 0.5}, 5, last, "lower --lr", nonfinite=True)
