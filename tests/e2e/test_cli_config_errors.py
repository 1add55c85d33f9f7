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

from tests.conftest import WorkerProcesses
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


# -- a worker that cannot import a step's module -----------------------------------------------------
ELSEWHERE = '''
import os
from pathlib import Path

from obstore.store import LocalStore

import rivers as rs


@rs.Asset
def where() -> int:
    return os.getpid()


repo = rs.CodeRepository([where], default_io_handler=rs.PickleIOHandler(LocalStore(str(Path("store").resolve()),
                                                                                     mkdir=True)))
'''


@pytest.mark.timeout(120)
def test_a_worker_names_where_it_looked_and_path_adds_a_directory(
    tmp_path: Path, redis_url: str, workers: WorkerProcesses
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "elsewhere_pipeline.py").write_text(ELSEWHERE)
    environ = {"RIVERS_PICKUP_TIMEOUT_S": "30"}
    lost = workers.start(redis_url, env=environ)  # started in the repository's root, not in the project
    result = rivers(project, "materialize", "elsewhere_pipeline.py", url=redis_url)
    assert result.returncode == 1, result.stderr
    assert "ModuleNotFoundError: No module named 'elsewhere_pipeline'" in result.stdout
    message = " ".join(result.stdout.split())  # the summary table wraps long errors
    assert "searched sys.path:" in message
    assert "rivers-worker --path DIR" in message
    workers.stop(lost)
    workers.start(redis_url, env=environ, extra=["--path", str(project)])
    result = rivers(project, "materialize", "elsewhere_pipeline.py", url=redis_url)
    assert result.returncode == 0, result.stdout + result.stderr


# -- errors that point at the fix ------------------------------------------------------------------
MISTAKES = '''
import rivers as rs


class Db(rs.Resource):
    url: str = "sqlite://"


def helper() -> int:
    return 1


@rs.Asset
def orders() -> list[int]:
    return [1]


@rs.Asset
def forgotten() -> int:
    return 1


@rs.Asset
def typo(order: list[int]) -> int:
    return 1


@rs.Asset
def needs_forgotten(forgotten: int) -> int:
    return forgotten


@rs.Asset
def needs_helper(helper: int) -> int:
    return helper


@rs.Asset
def by_type(db: Db) -> str:
    return db.url


typo_repo = rs.CodeRepository([orders, typo])
left_out_repo = rs.CodeRepository([orders, needs_forgotten])
plain_function_repo = rs.CodeRepository([orders, helper])
helper_param_repo = rs.CodeRepository([needs_helper])
resource_key_repo = rs.CodeRepository([by_type], resources={"database": Db()})
repo = rs.CodeRepository([orders], default_executor=rs.Executor.in_process())
'''


@pytest.fixture
def mistakes(tmp_path: Path) -> Path:
    (tmp_path / "mistakes.py").write_text(MISTAKES)
    return tmp_path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["mistakes:typo_repo"], "unresolved input 'order' of 'typo': no asset, task or resource has that name; "
                                 "did you mean 'orders'?"),
        (["mistakes:left_out_repo"], "unresolved input 'forgotten' of 'needs_forgotten': asset 'forgotten' is "
                                     "defined in module mistakes but not in the repository's assets=[...]"),
        (["mistakes", "--select", "forgotten"], "Asset 'forgotten' not found in the repository; asset 'forgotten' "
                                                "is defined in module mistakes but not in the repository's "
                                                "assets=[...]"),
        (["mistakes:plain_function_repo"], "got function 'helper' (module mistakes), which is not decorated: put "
                                           "@rs.Asset (or @rs.Task) on it"),
        (["mistakes:helper_param_repo"], "unresolved input 'helper' of 'needs_helper': 'helper' in module mistakes "
                                         "is a plain function, not an asset: decorate it with @rs.Asset"),
        (["mistakes:resource_key_repo"], "unresolved input 'db' of 'by_type': a Db resource is registered under "
                                         "the key 'database', and resources are injected by parameter name: name "
                                         "the parameter 'database' or register it as 'db'"),
        (["mistakse"], "no module named 'mistakse'"),
        (["mistakse"], "; did you mean 'mistakes'?"),
        (["mistakse.py"], "no file 'mistakse.py' (MODULE[:ATTR] or FILE.py[:ATTR]); did you mean 'mistakes.py'?"),
        (["mistakes:rpeo"], "module 'mistakes' has no attribute 'rpeo'"),
    ],
)
def test_errors_point_at_the_fix(mistakes: Path, args: list[str], expected: str) -> None:
    result = rivers(mistakes, "materialize", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in one_line_error(result)
    assert result.stdout == ""


@pytest.mark.parametrize("target", ["mistakes.py", "./mistakes.py:repo", "mistakes.py:repo"])
def test_a_file_path_is_understood(mistakes: Path, target: str) -> None:
    result = rivers(mistakes, "materialize", target)
    assert result.returncode == 0, result.stderr
    assert "orders" in result.stdout


def test_a_file_in_a_package_is_imported_as_its_module(tmp_path: Path) -> None:
    package = tmp_path / "pipelines"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("VALUE = 7\n")
    (package / "shop.py").write_text("import rivers as rs\n\nfrom .helpers import VALUE\n\n\n@rs.Asset\n"
                                     "def seven() -> int:\n    return VALUE\n\n\n"
                                     "repo = rs.CodeRepository([seven], default_executor=rs.Executor.in_process())\n")
    result = rivers(tmp_path, "materialize", "pipelines/shop.py")  # a relative import inside works
    assert result.returncode == 0, result.stderr


def test_a_failed_step_traceback_shows_the_users_frames_only(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(
        "import rivers as rs\n\n\ndef parse(row: str) -> int:\n    return int(row)\n\n\n@rs.Asset\n"
        "def rows() -> int:\n    return parse('x')\n\n\nrepo = rs.CodeRepository([rows])\n")
    result = rivers(tmp_path, "materialize", "failing.py")
    assert result.returncode == 1, result.stderr
    traceback = result.stdout.split("traceback of step 'rows':", 1)[1]
    assert "[rivers frames hidden]" in traceback
    assert f'{tmp_path / "failing.py"}", line 10, in rows' in traceback
    assert "line 5, in parse" in traceback
    assert "ValueError: invalid literal for int() with base 10: 'x'" in traceback
    assert "rivers/runtime.py" not in traceback and "rivers/executors" not in traceback
