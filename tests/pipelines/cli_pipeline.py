"""Pipelines for the `rivers materialize` end-to-end tests (tests/e2e/test_cli.py)."""

from __future__ import annotations

import rivers as rs


@rs.Asset
def numbers() -> list[int]:
    return [1, 2, 3]


@rs.Asset
def doubled(numbers: list[int]) -> list[int]:
    return [n * 2 for n in numbers]


@rs.Asset
def total(doubled: list[int]) -> int:
    return sum(doubled)


@rs.Asset
def greeting() -> str:
    return "hello"


@rs.Task
def announce(total: int) -> str:
    return f"total is {total}"


repo = rs.CodeRepository(
    assets=[numbers, doubled, total, greeting],
    tasks=[announce],
    jobs=[rs.Job("numbers_only", [numbers, doubled])],
    default_executor=rs.Executor.in_process(),
)


@rs.Asset
def explode(numbers: list[int]) -> int:
    raise ValueError(f"cannot handle {len(numbers)} numbers")


@rs.Asset
def after_explode(explode: int) -> int:
    return explode + 1


failing_repo = rs.CodeRepository(
    assets=[numbers, explode, after_explode, greeting],
    default_executor=rs.Executor.in_process(),
)


@rs.Asset
def orphan(missing_upstream: int) -> int:
    return missing_upstream


broken_repo = rs.CodeRepository(assets=[orphan], default_executor=rs.Executor.in_process())

not_a_repo = 42


def _numbered(i: int, fail: bool) -> int:
    if fail:
        raise RuntimeError(f"n{i} fails on purpose")
    return i


def numbered_assets(count: int, fail_every: int) -> list[rs.SingleAsset]:
    """`count` independent assets n0, n1, ...; every `fail_every`-th one raises."""
    assets = []
    for i in range(count):
        def fn(i: int = i) -> int:  # a default is not a dependency: it pins i
            return _numbered(i, i % fail_every == 0)
        assets.append(rs.Asset(fn, name=f"n{i}"))
    return assets
