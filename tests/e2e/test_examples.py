"""The pipelines in examples/ run as the README says, in a directory of their own."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli import ROOT, command, statuses

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("target", "written"),
    [
        ("examples.demo:repo", "revenue_report.pkl"),
        ("examples.fanout:repo", "fanout/word_stats/count_words__river.pkl"),
        ("examples.landing:repo", "landing/revenue_by_region.pkl"),
    ],
)
def test_example_materializes(tmp_path: Path, target: str, written: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [*command("rivers"), "materialize", target], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=180, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = statuses(result.stdout)
    assert rows and set(rows.values()) == {"succeeded"}
    assert (tmp_path / ".rivers-demo" / written).exists()


def test_fanout_example_counts_every_document(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    env["PYTHONPATH"] = str(ROOT)
    subprocess.run([*command("rivers"), "materialize", "examples.fanout:repo"], cwd=tmp_path, env=env,
                   capture_output=True, timeout=180, check=True)
    stats = pickle.loads((tmp_path / ".rivers-demo" / "fanout" / "word_stats.pkl").read_bytes())
    assert stats["river"] == 2 and stats["queue"] == 2 and stats["assets"] == 2
    assert list(stats.values()) == sorted(stats.values(), reverse=True)


def test_landing_example_observes_the_external_asset_then_materializes(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run([sys.executable, "-m", "examples.landing"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180, check=True)
    assert "observed raw_orders: {'file': 'raw_orders.csv', 'rows': 5, 'bytes': 97}" in done.stdout
    revenue = pickle.loads((tmp_path / ".rivers-demo" / "landing" / "revenue_by_region.pkl").read_bytes())
    assert revenue == {"east": 30.25, "north": 12.5, "south": 12.75}  # the row without a number was dropped
