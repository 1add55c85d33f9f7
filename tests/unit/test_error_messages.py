"""Clear errors: each mistake a user makes gives one line naming the asset/step and the cause.

No Python traceback text, no internal class names (`_Job`, `<locals>`, loky's `BrokenProcessPool`),
no multi-line dumps of a storage library's error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from obstore.store import LocalStore

import rivers as rs
from tests.pipelines import crash_pipeline as cp
from tests.redis_server import free_port

UNCLEAR = ("Traceback", 'File "', "_Job", "<locals>", "BrokenProcessPool", "loky", "Debug source", "NotFound {")
POOL = rs.Executor.parallel(max_workers=2)  # the pool the parallel tests share


def assert_clear(message: str, *names: str) -> None:
    assert "\n" not in message.strip(), message
    for unclear in UNCLEAR:
        assert unclear not in message, message
    for name in names:
        assert f"'{name}'" in message, f"{name!r} not named in: {message}"


def in_process(assets: list[object], **kwargs: object) -> rs.CodeRepository:
    return rs.CodeRepository(assets, default_executor=rs.Executor.in_process(), **kwargs)  # type: ignore[arg-type]


def failure_of(result: rs.RunResult, step: str) -> str:
    return dict(result.failed_assets)[step]


@pytest.fixture
def store_dir(tmp_path: Path) -> str:
    return str(tmp_path)


@pytest.fixture
def unimportable_in_pool() -> Iterator[Path]:
    marker = cp.marker_path(os.getpid())
    yield marker
    marker.unlink(missing_ok=True)


def test_a_cycle_names_its_assets() -> None:
    @rs.Asset
    def a(b: int) -> int:
        return b

    @rs.Asset
    def b(a: int) -> int:
        return a

    with pytest.raises(rs.GraphValidationError) as info:
        in_process([a, b]).validate()
    assert str(info.value) == "Cycle detected in asset graph: b -> a -> b"  # as rivers 0.6 words it


def test_an_unknown_parameter_names_it_and_its_asset() -> None:
    @rs.Asset
    def report(nope: int) -> int:
        return nope

    with pytest.raises(rs.GraphValidationError) as info:
        in_process([report]).validate()
    assert_clear(str(info.value), "nope", "report")


def test_a_missing_asset_in_a_selection_is_named() -> None:
    with pytest.raises(rs.AssetNotFoundError) as info:
        in_process([cp.independent]).materialize(selection=["ghost"])
    assert_clear(str(info.value), "ghost")


def test_a_job_naming_a_missing_node_names_both() -> None:
    @rs.Asset
    def ghost() -> int:
        return 1

    repo = in_process([cp.independent], jobs=[rs.Job("nightly", [cp.independent, ghost])])
    with pytest.raises(rs.NodeNotFoundError) as info:
        repo.get_job("nightly")
    assert_clear(str(info.value), "nightly", "ghost")


@pytest.mark.slow
def test_a_function_a_worker_cannot_import_names_the_step_and_the_import_error(
    store_dir: str, unimportable_in_pool: Path
) -> None:
    from tests.pipelines import crash_unimportable

    unimportable_in_pool.write_text("import")  # its module imports a package the workers lack
    repo = rs.CodeRepository([cp.upstream, crash_unimportable.victim], default_executor=POOL,
                             default_io_handler=rs.PickleIOHandler(LocalStore(store_dir)))
    message = failure_of(repo.materialize(raise_on_error=False), "victim")
    assert_clear(message, "victim", "rivers_not_installed_here")
    assert message.startswith("SpecError: step 'victim': cannot load its code: ModuleNotFoundError: ")


def test_a_resource_whose_setup_fails_is_named_when_the_repository_resolves() -> None:
    repo = in_process([cp.needs_database], resources={"database": cp.Database()})
    with pytest.raises(rs.ConfigurationError) as info:
        repo.materialize()
    assert str(info.value) == "Resource 'database' (Database) failed in setup(): ConnectionError: database is down"
    assert isinstance(info.value.__cause__, ConnectionError)


def test_a_failed_resolution_does_not_set_up_a_resource_twice() -> None:
    counted = Counted()
    repo = in_process([cp.needs_database], resources={"counted": counted, "database": cp.Database()})
    for _ in range(2):
        with pytest.raises(rs.ConfigurationError):
            repo.materialize()  # validate() sets no resource up (rivers 0.6)
    assert counted.setups == 1


class Counted(rs.Resource):
    setups: int = 0

    def setup(self) -> None:
        self.setups += 1


@pytest.mark.slow
def test_a_resource_whose_setup_fails_in_a_worker_names_the_step_and_the_resource(store_dir: str) -> None:
    repo = rs.CodeRepository([cp.needs_database], default_executor=POOL,
                             default_io_handler=rs.PickleIOHandler(LocalStore(store_dir)),
                             resources={"database": cp.Database(fails_in="workers")})
    message = failure_of(repo.materialize(raise_on_error=False), "needs_database")
    assert message == ("SpecError: step 'needs_database': resource 'database' (Database) failed in setup(): "
                       "ConnectionError: database is down")


@pytest.mark.parametrize("executor", [pytest.param(rs.Executor.in_process(), id="in_process"),
                                      pytest.param(POOL, id="parallel", marks=pytest.mark.slow)])
def test_a_missing_upstream_file_names_the_upstream_and_the_step(store_dir: str, executor: rs.Executor) -> None:
    repo = rs.CodeRepository([cp.upstream, cp.sibling], default_executor=executor,
                             default_io_handler=rs.PickleIOHandler(LocalStore(store_dir)))
    result = repo.materialize(selection=["sibling"], raise_on_error=False)  # upstream was never written
    message = failure_of(result, "sibling")
    assert_clear(message, "sibling", "upstream")
    assert message.startswith("FileNotFoundError: 'sibling' cannot load its input 'upstream' (was it materialized?): ")
    assert "upstream.pkl" in message
    with pytest.raises(FileNotFoundError):  # the type is kept: retry_on=[FileNotFoundError] still matches
        repo.materialize(selection=["sibling"])


@pytest.mark.timeout(15)  # a guard against hanging on an absent Redis, not a measurement
def test_redis_unreachable_at_start_is_one_sentence(monkeypatch: pytest.MonkeyPatch, store_dir: str) -> None:
    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("RIVERS_REDIS_URL", url)
    repo = rs.CodeRepository([cp.upstream], default_executor=POOL,
                             default_io_handler=rs.PickleIOHandler(LocalStore(store_dir)))
    with pytest.raises(rs.ExecutionError) as info:
        repo.materialize()
    message = str(info.value)
    assert_clear(message)
    assert message.startswith(f"Cannot reach Redis at {url} (RIVERS_REDIS_URL): "), message
