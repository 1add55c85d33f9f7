"""Jobs: named selections of a repository with their own executor and retry policy."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rivers.definitions.executors import Executor
from rivers.definitions.nodes import NodeDefinition
from rivers.definitions.policies import RetryPolicy
from rivers.definitions.unsupported import refuse_if_used
from rivers.exceptions import ExecutionError, GraphValidationError

if TYPE_CHECKING:
    from rivers.definitions.repository import CodeRepository
    from rivers.results import RunResult


class Job:
    """`rs.Job(name, assets, ...)`; run it through `repo.get_job(name).execute()`."""

    def __init__(
        self,
        name: str,
        assets: list[Any],
        executor: Executor | None = None,
        allow_incomplete_deps: bool = False,
        retry: RetryPolicy | str | None = None,
    ) -> None:
        assets = list(assets)
        if not assets:  # rivers 0.6.2's message
            raise GraphValidationError(f"Job '{name}' got an empty asset list: name at least one asset or task")
        for item in assets:
            if not isinstance(item, NodeDefinition):  # names too, as rivers 0.6: pass the definitions
                hint = f" {item!r}; pass the definition object, not its name" if isinstance(item, str) else ""
                raise GraphValidationError(
                    f"Job assets must be Asset, Task, or BashTask instances; job '{name}' got "
                    f"{type(item).__name__}{hint}"
                )
        if executor is not None and not isinstance(executor, Executor):
            raise GraphValidationError(f"executor of job '{name}' must be an Executor, got {type(executor).__name__}")
        self.name = name
        self.assets = list(assets)
        self.executor = executor
        self.allow_incomplete_deps = allow_incomplete_deps
        self.retry = retry
        self._repository: CodeRepository | None = None

    @property
    def node_names(self) -> list[str]:
        return [item.name for item in self.assets]

    def bound_to(self, repository: CodeRepository) -> Job:
        job = Job(self.name, self.assets, self.executor, self.allow_incomplete_deps, self.retry)
        job._repository = repository
        return job

    def execute(
        self, tags: dict[str, str] | list[str] | None = None, config: dict[str, Any] | None = None,
        raise_on_error: bool = True, *, partition_key: Any = None,
    ) -> RunResult:
        refuse_if_used("Job.execute", partition_key=partition_key)
        if self._repository is None:
            raise ExecutionError(
                f"Job '{self.name}' has not been validated; get it from its repository with repo.get_job('{self.name}')"
            )
        return self._repository._execute_job(self, tags=tags, config=config, raise_on_error=raise_on_error)

    def __repr__(self) -> str:
        return f"Job(name={self.name!r})"
