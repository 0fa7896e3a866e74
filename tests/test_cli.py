"""The `w1ot` command: the demo runs end to end and writes its plot."""

from __future__ import annotations

import pytest

from w1ot.cli import main


def test_demo_prints_metrics_and_writes_the_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo.png"
    assert main(["demo", "--n", "400", "--iters", "150", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for line in ("fit time", "dual W1 estimate", "MMD(transported, target)", "r2 of feature means"):
        assert line in text
    assert out.stat().st_size > 10_000


def test_demo_rejects_too_few_cells():
    with pytest.raises(SystemExit):
        main(["demo", "--n", "10"])


def test_benchmark_subcommand_is_wired():
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--help"])
    assert exc.value.code == 0
