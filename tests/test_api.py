"""trainer.run(...) from Python, as a notebook would call it: the same
config tree, the same job, the same one-line errors as the CLI."""
from __future__ import annotations

import pytest

import trainer
from helpers import TINY, one_line_error, run_cli


def overrides(root) -> list[str]:
    return [f"data.root={root}", *TINY, "model.hidden=[32]", "data.subset=128"]


def test_run_trains_and_returns_the_record(synthetic_root, tmp_path):
    result = trainer.run(*overrides(synthetic_root), "epochs=2", "optimizer=adam", "lr=1e-2",
                         run_dir=tmp_path / "run", quiet=True)
    assert result["status"] == "completed" and result["run_dir"] == str(tmp_path / "run")
    assert [row["epoch"] for row in result["history"]] == [1, 2]
    assert result["hparams"]["optimizer"] == "adam" and result["hparams"]["lr"] == 0.01
    assert result["final"]["test/acc"] > 0.5
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert "Model: MLP" in (tmp_path / "run" / "trainer.log").read_text()
    # Resume by run folder, as on the command line: the run's own settings and folder, more epochs.
    resumed = trainer.run(f"resume={tmp_path / 'run'}", "epochs=3", quiet=True)
    assert resumed["run_dir"] == str(tmp_path / "run") and [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert resumed["resumed"] == 1 and resumed["hparams"]["optimizer"] == "adam"
    with pytest.raises(trainer.UserError, match="leave out run_dir"):
        trainer.run(f"resume={tmp_path / 'run'}", "epochs=4", run_dir=tmp_path / "other", quiet=True)
    with pytest.raises(trainer.UserError, match="strings such as"):
        trainer.run(123)


@pytest.mark.parametrize("bad", ["optimzer=adam", "lr=-1", "model=cnn"])
def test_a_bad_override_raises_the_clis_one_line(synthetic_root, tmp_path, bad):
    with pytest.raises(trainer.UserError) as raised:
        trainer.run(*overrides(synthetic_root), bad, run_dir=tmp_path / "api", quiet=True)
    cli_line = one_line_error(run_cli([*overrides(synthetic_root), bad, f"hydra.run.dir={tmp_path / 'cli'}"],
                                      tmp_path))
    assert cli_line == f"trainer: error: {raised.value}"
