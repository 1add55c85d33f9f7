"""Tasks: units of computation, standalone or inside graph assets (API.md §2)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

from rivers.definitions.nodes import NodeDefinition, reject_reserved
from rivers.definitions.policies import Hook, RetryPolicy
from rivers.io.base import BaseIOHandler


class Task(NodeDefinition):
    """`@rs.Task` / `@rs.Task(...)`; called outside a graph body it just runs."""

    kind = "task"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Task and not args:
            return lambda f: Task(f, **kwargs)
        return super().__new__(cls)

    def __init__(
        self,
        fn: Callable[..., Any],
        /,
        *,
        name: str | None = None,
        tags: list[str] | None = None,
        io_handler: BaseIOHandler | str | None = None,
        retry: RetryPolicy | str | None = None,
        hooks: list[Hook] | None = None,
        **reserved: Any,
    ) -> None:
        reject_reserved("Task", {k: v for k, v in reserved.items() if k != "partition_mapping"})
        self._init_node(fn, name, tags, io_handler, None, retry, hooks)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from rivers.definitions.graph import recording_graph

        recorder = recording_graph()
        if recorder is not None:
            return recorder.record(self, args, kwargs)
        assert self.fn is not None
        return self.fn(*args, **kwargs)


def _run_command(command: str | list[str], env: dict[str, str] | None, cwd: str | None) -> str:
    completed = subprocess.run(
        command, shell=isinstance(command, str), env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        stderr = completed.stderr.strip()
        detail = f": {stderr}" if stderr else ""
        raise OSError(f"Command failed with exit status {completed.returncode}{detail}")
    return completed.stdout[:-1] if completed.stdout.endswith("\n") else completed.stdout


class BashTask(Task):
    """A shell command as a task; its value is stdout without the trailing newline."""

    kind = "task"

    def __init__(
        self,
        name: str,
        command: str | list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        tags: list[str] | None = None,
        io_handler: BaseIOHandler | str | None = None,
        retry: RetryPolicy | str | None = None,
    ) -> None:
        self.command = command
        self.env = env
        self.cwd = cwd
        self._init_node(None, name, tags, io_handler, None, retry, None)
        self.fn = self._run

    def _run(self) -> str:
        return _run_command(self.command, self.env, self.cwd)

    def __repr__(self) -> str:
        return f"BashTask(name={self.name!r}, command={self.command!r})"
