"""Errors of background writers (TensorBoard's event-writer thread, the
trainer.log handler) reach the run as its one error line, never as a
traceback that Python's logging or threading prints on the console."""
from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path

import pytest
from tensorboard.summary.writer import record_writer

import trainer
from trainer.runs.record import LogBuffer

from helpers import tiny


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_line_trainer_log_cannot_write_is_dropped_without_a_console_traceback(capfd):
    logs = LogBuffer()
    try:
        logs.to_file(Path("/dev/full"))  # every write: No space left on device
        logging.getLogger("trainer").info("a line for a full disk")
        logging.getLogger("trainer").error("and an error")
    finally:
        logs.close()
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == "", captured.err


@pytest.fixture
def full_after(monkeypatch):
    """full_after(n): TensorBoard's writer thread hits a full disk at its n-th record."""
    def install(n: int) -> None:
        calls = {"n": 0}
        original = record_writer.RecordWriter.write

        def write(self, data):
            calls["n"] += 1
            if calls["n"] >= n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "events.out.tfevents.test")
            return original(self, data)

        monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    return install


@pytest.mark.parametrize("n", [1, 20])
def test_a_writer_thread_on_a_full_disk_fails_the_run_in_one_line(synthetic_root, tmp_path, capfd, full_after, n):
    hook = threading.excepthook
    full_after(n)
    with pytest.raises(trainer.UserError) as failed:
        trainer.run(*tiny(synthetic_root, "epochs=2"), run_dir=tmp_path / "run", quiet=True)
    assert "No space left on device" in str(failed.value) and "internal error" not in str(failed.value)
    assert failed.value.result["status"] == "failed"
    assert "Traceback" not in capfd.readouterr().err
    assert threading.excepthook is hook  # the job's hook is its own, not left to the rest of the process
