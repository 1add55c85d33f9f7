"""Tasks: units of computation, standalone or inside graph assets (API.md §2)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import Any

from rivers.definitions.nodes import NodeDefinition, reject_reserved
from rivers.definitions.policies import Hook, RetryPolicy
from rivers.definitions.resources import check_io_handler_argument
from rivers.definitions.unsupported import refuse_if_used
from rivers.exceptions import TaskDefinitionError
from rivers.io.base import BaseIOHandler


class Task(NodeDefinition):
    """`@rs.Task` / `@rs.Task(...)`; called outside a graph body it just runs."""

    kind = "task"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is Task and args and "wraps" in kwargs:
            raise TypeError("Task.__new__() got multiple values for argument 'wraps'")
        if cls is Task and not args and kwargs.get("wraps") is None:  # `@rs.Task(...)`: a decorator
            kwargs.pop("wraps", None)
            return lambda f: Task(f, **kwargs)
        return super().__new__(cls)  # `rs.Task(fn, ...)` / `rs.Task(wraps=fn, ...)`

    def __init__(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        wraps: Callable[..., Any] | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        io_handler: BaseIOHandler | str | None = None,
        retry: RetryPolicy | str | None = None,
        hooks: list[Hook] | None = None,
        metadata: dict[str, str] | None = None,
        **reserved: Any,
    ) -> None:
        reject_reserved("Task", reserved)
        check_io_handler_argument(io_handler)
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"Task metadata must be a dict, got {type(metadata).__name__}")
        if fn is not None and wraps is not None:
            raise TypeError("Task() got multiple values for argument 'wraps'")
        fn = wraps if fn is None else fn
        if fn is None:
            raise TypeError("Task needs a function, got None")
        self._init_node(fn, name, tags, io_handler, metadata, retry, hooks)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from rivers.definitions.graph import recording_graph

        recorder = recording_graph()
        if recorder is not None:
            return recorder.record(self, args, kwargs)
        assert self.fn is not None
        return self.fn(*args, **kwargs)


def _run_command(command: str | list[str], env: dict[str, str] | None, cwd: str | None) -> str:
    try:
        completed = subprocess.run(
            command, shell=isinstance(command, str), env=env, cwd=cwd, capture_output=True, text=True, check=False
        )
    except OSError as exc:  # the program (or cwd) does not exist: an OSError, as rivers reports it
        raise OSError(f"{exc.strerror} (os error {exc.errno}): {command!r}") from exc
    if completed.returncode != 0:
        raise OSError(f"Command failed with exit status: {completed.returncode}: {completed.stderr.strip()}")
    return completed.stdout[:-1] if completed.stdout.endswith("\n") else completed.stdout


def _not_str(value: Any, expected: str = "str") -> TypeError:
    return TypeError(f"'{type(value).__name__}' object is not an instance of '{expected}'")


def check_command(name: str, command: Any) -> str | list[str]:
    """A BashTask command: a string for `sh -c`, or a non-empty list of strings to exec."""
    if isinstance(command, str):
        return command
    if not isinstance(command, (list, tuple)) or not all(isinstance(part, str) for part in command):
        raise TypeError(f"command must be a str or list[str] (BashTask '{name}' got {command!r})")
    if not command:
        raise TaskDefinitionError(f"command list must not be empty (BashTask '{name}')")
    return list(command)


def check_env_cwd(env: Any, cwd: Any) -> None:
    """`env` maps strings to strings; `cwd` is a string (checked when defined, as rivers does)."""
    if env is not None:
        if not isinstance(env, dict):
            raise _not_str(env, "dict")
        for key, value in env.items():
            if not isinstance(key, str):
                raise _not_str(key)
            if not isinstance(value, str):
                raise _not_str(value)
    if cwd is not None and not isinstance(cwd, str):
        raise _not_str(cwd)


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
        *,
        partition_mapping: Any = None,
    ) -> None:
        refuse_if_used("BashTask", partition_mapping=partition_mapping)
        if not isinstance(name, str):
            raise _not_str(name)
        self.command = check_command(name, command)
        check_env_cwd(env, cwd)
        check_io_handler_argument(io_handler)
        self.env = env
        self.cwd = cwd
        self._init_node(None, name, tags, io_handler, None, retry, None)
        self.fn = self._run

    def _run(self) -> str:
        return _run_command(self.command, self.env, self.cwd)

    def __repr__(self) -> str:
        return f"BashTask(name={self.name!r}, command={self.command!r})"
