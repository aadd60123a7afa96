"""``lit_featinv.app.quiet()``: the Python API without Lightning's tips and device lines (the CLI keeps the device
lines); the documentation's Python examples call it (tests/docs/test_runnable.py runs them)."""
import logging

import pytest
from lightning.pytorch import Trainer

from lit_featinv.app import quiet
from lit_featinv.app.cli import Quiet

LOGGERS = ("lightning.pytorch", "lightning.fabric")
RANK_ZERO = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


@pytest.fixture
def heard(caplog, monkeypatch):
    """Lightning's log records (its loggers may not pass them to the root's handlers), Lightning as it is before any
    quiet() of an earlier test in this process (its levels and filters restored after)."""
    monkeypatch.delenv("LIT_FEATINV_VERBOSE", raising=False)
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    filters = {name: list(logging.getLogger(name).filters) for name in RANK_ZERO}
    for name in LOGGERS:
        logging.getLogger(name).addHandler(caplog.handler)
        logging.getLogger(name).setLevel(logging.INFO)  # Lightning's own level
    for name in RANK_ZERO:
        logging.getLogger(name).filters = [f for f in filters[name] if not isinstance(f, Quiet)]
    yield caplog
    for name, level in levels.items():
        logging.getLogger(name).removeHandler(caplog.handler)
        logging.getLogger(name).setLevel(level)
    for name, kept in filters.items():
        logging.getLogger(name).filters = kept


def test_quiet_drops_lightning_tips_and_device_lines(heard):
    Trainer(accelerator="cpu", devices=1, logger=False)
    assert "GPU available" in heard.text and "Tip" in heard.text  # Lightning as it is
    heard.clear()
    quiet(info=True)  # the CLI's: the device lines stay, the cloud-logger tip goes
    Trainer(accelerator="cpu", devices=1, logger=False)
    assert "GPU available" in heard.text and "litlogger" not in heard.text
    heard.clear()
    quiet()
    Trainer(accelerator="cpu", devices=1, logger=False)
    assert "GPU available" not in heard.text and "Tip" not in heard.text
