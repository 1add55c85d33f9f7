"""`rivers materialize --config/--set` and the errors that point at the fix, through the real CLI.

Each test writes a small project into a temporary directory and runs `rivers` there; marker files written by
the steps show whether anything ran."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import redis

from tests.e2e.test_cli import command, one_line_error

pytestmark = pytest.mark.slow

SHOP = '''
from pathlib import Path

from pydantic import BaseModel

import rivers as rs


class ReportConfig(BaseModel):
    currency: str = "EUR"
    top_days: int = 3


class Db(rs.Resource):
    url: str = "sqlite://"
    pool: int = 2


@rs.Asset
def orders() -> list[int]:
    Path("ran-orders").write_text("")
    return [1, 2, 3]


@rs.Asset
def report(context: rs.AssetExecutionContext[ReportConfig], orders: list[int]) -> str:
    Path("ran-report").write_text(context.config.model_dump_json())
    return context.config.currency


@rs.Asset
def plain(orders: list[int]) -> int:
    return len(orders)


repo = rs.CodeRepository(assets=[orders, report, plain], resources={"db": Db()},
                         default_executor=rs.Executor.in_process())
'''


def rivers(project: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIVERS_") and k != "PYTHONPATH"}
    if url is not None:
        env["RIVERS_REDIS_URL"] = url
    return subprocess.run([*command("rivers"), *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    (tmp_path / "shop.py").write_text(SHOP)
    return tmp_path


def nothing_ran(project: Path) -> bool:
    return not list(project.glob("ran-*"))


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr
    return [line.strip() for line in result.stderr.splitlines() if line.strip()]


# -- --config and --set -----------------------------------------------------------------------------
def test_a_yaml_config_reaches_the_step(shop: Path) -> None:
    (shop / "run.yaml").write_text("assets:\n  report:\n    config:\n      currency: USD\n")
    result = rivers(shop, "materialize", "shop", "--config", "run.yaml")
    assert result.returncode == 0, result.stderr
    assert json.loads((shop / "ran-report").read_text()) == {"currency": "USD", "top_days": 3}


def test_set_overrides_a_config_value_and_parses_json(shop: Path) -> None:
    (shop / "run.json").write_text(json.dumps({"assets": {"report": {"config": {"currency": "USD", "top_days": 1}}}}))
    result = rivers(shop, "materialize", "shop", "--config", "run.json", "--set", "report.currency=GBP",
                    "--set", "report.top_days=7")
    assert result.returncode == 0, result.stderr
    assert json.loads((shop / "ran-report").read_text()) == {"currency": "GBP", "top_days": 7}


def test_set_alone_and_a_flat_config_file(shop: Path) -> None:
    (shop / "flat.yaml").write_text("report: {top_days: 2}\n")
    result = rivers(shop, "materialize", "shop", "--config", "flat.yaml", "--set", "report.currency=CHF")
    assert result.returncode == 0, result.stderr
    assert json.loads((shop / "ran-report").read_text()) == {"currency": "CHF", "top_days": 2}


def test_a_misspelled_field_fails_before_the_first_step(shop: Path) -> None:
    result = rivers(shop, "materialize", "shop", "--set", "report.curency=USD")
    assert result.returncode == 2, result.stderr
    lines = error_lines(result)
    assert lines[0] == "rivers: error: the run config has a problem; nothing ran:"
    assert lines[1:] == ["run config for asset 'report': unknown field 'curency'; did you mean 'currency'?"]
    assert nothing_ran(shop)
    assert result.stdout == ""


def test_a_wrong_type_names_the_asset_field_and_value(shop: Path) -> None:
    result = rivers(shop, "materialize", "shop", "--set", "report.top_days=many")
    assert result.returncode == 2
    (line,) = error_lines(result)[1:]
    assert line.startswith("run config for asset 'report': field 'top_days': Input should be a valid integer")
    assert line.endswith("(got 'many')")
    assert nothing_ran(shop)


def test_every_problem_is_one_line(shop: Path) -> None:
    (shop / "bad.yaml").write_text(textwrap.dedent("""\
        assets:
          report: {config: {curency: USD, top_days: many}}
          reprot: {config: {currency: USD}}
          plain: {config: {n: 1}}
        resources:
          dbb: {url: x}
          db: {pool: lots, uri: x}
        """))
    result = rivers(shop, "materialize", "shop", "--config", "bad.yaml")
    assert result.returncode == 2
    lines = error_lines(result)
    assert lines[0] == "rivers: error: the run config has 7 problems; nothing ran:"
    problems = lines[1:]
    assert len(problems) == 7, problems
    expected = [
        "asset 'report': unknown field 'curency'; did you mean 'currency'?",
        "asset 'report': field 'top_days'",
        "names 'reprot', which is not an asset or task of the repository; did you mean 'report'?",
        "asset 'plain': it has no context parameter",
        "resource 'dbb', which the repository does not have; did you mean 'db'?",
        "resource 'db': unknown field 'uri'; did you mean 'url'?",
        "resource 'db': field 'pool'",
    ]
    for phrase, line in zip(expected, problems, strict=True):
        assert phrase in line, (phrase, line)
    assert nothing_ran(shop)


def test_a_wrong_section_and_an_unreadable_file(shop: Path) -> None:
    (shop / "sections.yaml").write_text("assets: {}\nasets: {}\n")
    result = rivers(shop, "materialize", "shop", "--config", "sections.yaml")
    assert result.returncode == 2
    assert "unknown section 'asets'" in error_lines(result)[1]
    (shop / "broken.json").write_text('{"assets": ')
    result = rivers(shop, "materialize", "shop", "--config", "broken.json")
    assert result.returncode == 2
    assert "--config broken.json: not valid JSON" in one_line_error(result)
    result = rivers(shop, "materialize", "shop", "--config", "missing.yaml")
    assert "--config missing.yaml: No such file or directory" in one_line_error(result)
    result = rivers(shop, "materialize", "shop", "--set", "report=USD")
    assert "--set report=USD: expected ASSET.FIELD=VALUE" in one_line_error(result)
    assert nothing_ran(shop)


def test_submit_checks_the_config_before_touching_redis(shop: Path, redis_url: str) -> None:
    result = rivers(shop, "submit", "shop", "--set", "report.top_dayz=2", url=redis_url)
    assert result.returncode == 2, result.stderr
    assert error_lines(result)[1:] == ["run config for asset 'report': unknown field 'top_dayz'; did you mean "
                                       "'top_days'?"]
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.close()
