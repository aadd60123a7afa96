"""``lit_featinv.app.quiet()``: the Python API without Lightning's tips and device lines (the CLI keeps the device
lines); the README's Python example calls it (tests/test_api.py runs the example)."""
import logging

import pytest
from lightning.pytorch import Trainer

from lit_featinv.app import quiet

LOGGERS = ("lightning.pytorch", "lightning.fabric")


@pytest.fixture
def heard(caplog, monkeypatch):
    """Lightning's log records (its loggers may not pass them to the root's handlers); its levels restored after."""
    monkeypatch.delenv("LIT_FEATINV_VERBOSE", raising=False)
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).addHandler(caplog.handler)
    yield caplog
    for name, level in levels.items():
        logging.getLogger(name).removeHandler(caplog.handler)
        logging.getLogger(name).setLevel(level)


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
