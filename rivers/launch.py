"""A run's `config=` launch document: per-step config, resource overrides, this run's executor."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from rivers.definitions.executors import Executor
from rivers.definitions.graph import GraphTaskNode
from rivers.definitions.tasks import Task
from rivers.exceptions import ConfigurationError

if TYPE_CHECKING:
    from rivers.resolve import ResolvedGraph

SECTIONS = ("assets", "resources", "execution")


@dataclass
class LaunchConfig:
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    executor: Executor | None = None


def parse_launch(config: dict[str, Any] | None) -> LaunchConfig:
    """Parse `{"assets": {step: {"config": {...}}}, "resources": {...}, "execution": {...}}` (or the flat form)."""
    if not config:
        return LaunchConfig()
    if not isinstance(config, dict):
        raise ConfigurationError(f"run config must be a dict, got {type(config).__name__}")
    if not any(key in SECTIONS for key in config):  # the older flat form {step: {...}}
        return LaunchConfig(steps={step: _step_config(step, value) for step, value in config.items()})
    unknown = [key for key in config if key not in SECTIONS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), SECTIONS, n=1)
        meant = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigurationError(
            f"run config has an unknown section '{unknown[0]}'{meant}; expected one of: {', '.join(SECTIONS)}"
        )
    steps = {step: _step_config(step, value) for step, value in _section(config, "assets", "asset").items()}
    resources = _section(config, "resources", "resource key")
    for key, value in resources.items():
        if not isinstance(value, dict):
            raise ConfigurationError(f"run config for resource '{key}' must be a dict of fields")
    return LaunchConfig(steps, resources, _executor(config.get("execution")))


def _section(config: dict[str, Any], name: str, keyed_by: str) -> dict[str, Any]:
    value = config.get(name) or {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"the {name} section of a run config must be a dict keyed by {keyed_by}, got "
                                 f"{type(value).__name__}")
    return dict(value)


def _step_config(step: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"run config for '{step}' must be a dict, got {type(value).__name__}")
    if "config" in value and set(value) <= {"config", "metadata"}:  # the launch form; metadata is rivers' too
        if not isinstance(value["config"], dict):
            raise ConfigurationError(f"run config for '{step}': 'config' must be a dict of field values, got "
                                     f"{type(value['config']).__name__}")
        return dict(value["config"])
    return dict(value)


def _executor(section: Any) -> Executor | None:
    if not section:
        return None
    if not isinstance(section, dict):
        raise ConfigurationError("the execution section of a run config must be a dict")
    key = section.get("executor", "parallel")
    extra = sorted(set(section) - {"executor", "max_workers", "max_async_concurrent"})
    if extra:
        raise ConfigurationError(f"execution section has unknown key '{extra[0]}'")
    if key == "in_process":
        return Executor.in_process()
    if key == "parallel":
        return Executor.parallel(section.get("max_workers"), section.get("max_async_concurrent"))
    raise ConfigurationError(f"Unknown executor in run config execution section: '{key}'")


# -- checking a launch document against a repository, before the first step ----------------------
def check_launch(graph: ResolvedGraph, resources: dict[str, BaseModel], config: dict[str, Any] | None,
                 *, strict: bool) -> list[str]:
    """Every problem of `config` for this repository, one line each, naming the asset (or resource) and field.

    Always, as rivers 0.6: unknown sections, assets and resources, and a resource override's unknown fields and
    wrong types. `strict` (the command line) adds what rivers leaves to the step at run time or ignores: config for
    a step without a context, and a step config's unknown fields (with the close names) and wrong types."""
    try:
        launch = parse_launch(config)
    except ConfigurationError as exc:
        return [str(exc)]
    problems: list[str] = []
    for name, fields in launch.steps.items():
        problems += _check_step(graph, name, fields, strict=strict)
    for key, fields in launch.resources.items():
        problems += _check_resource(resources, key, fields)
    return problems


def _check_step(graph: ResolvedGraph, name: str, fields: dict[str, Any], *, strict: bool) -> list[str]:
    node = graph.nodes.get(name) or graph.nodes.get(name.partition("__")[0])  # a fan-out instance: its task
    if node is None:
        owner = graph.producer.get(name)
        if owner is not None:
            return [f"run config names '{name}', an output of '{owner}': configure '{owner}' instead"]
        in_graphs = [node for node in graph.nodes if node.rpartition("/")[2] == name]  # a graph's task
        meant = f"did you mean {' or '.join(map(repr, in_graphs))}?" if in_graphs else hint(name, sorted(graph.nodes))
        return [f"run config names '{name}', which is not an asset or task of the repository; {meant}"]
    if not strict:
        return []
    label = f"{'task' if isinstance(node.definition, (Task, GraphTaskNode)) else 'asset'} '{name}'"
    if node.context_type is None:
        return [f"run config for {label}: it has no context parameter, so no config reaches it"]
    if node.config_type is None:
        return []
    return [f"run config for {label}: {problem}" for problem in model_problems(node.config_type, fields)]


def _check_resource(resources: dict[str, BaseModel], key: str, fields: dict[str, Any]) -> list[str]:
    if key not in resources:
        return [f"run config overrides resource '{key}', which the repository does not have; "
                f"{hint(key, sorted(resources), 'resources')}"]
    current = resources[key]
    return [f"run config for resource '{key}': {problem}"
            for problem in model_problems(type(current), fields, base=current.model_dump())]


def model_problems(model: type[BaseModel], fields: dict[str, Any], base: dict[str, Any] | None = None) -> list[str]:
    """Unknown fields (with the close names) and every validation error of `fields`, a line each."""
    known = _field_names(model)
    problems = []
    if model.model_config.get("extra") != "allow":
        problems = [f"unknown field '{name}'; {hint(name, sorted(known), 'fields')}"
                    for name in fields if name not in known]
    try:
        model.model_validate({**(base or {}), **fields})
    except ValidationError as exc:
        # a resource's own current values are not this config's problem; unknown names are reported above
        problems += [_describe_error(error) for error in exc.errors()
                     if (base is None or (error["loc"] and error["loc"][0] in fields))
                     and not (error["type"] == "extra_forbidden" and len(error["loc"]) == 1)]
    return problems


def _field_names(model: type[BaseModel]) -> set[str]:
    names = set(model.model_fields)
    for info in model.model_fields.values():
        names.update(alias for alias in (info.alias, info.validation_alias) if isinstance(alias, str))
    return names


def _describe_error(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    got = f" (got {error['input']!r})" if error["type"] != "missing" else ""
    return f"field '{where}': {error['msg']}{got}"


def hint(name: str, known: list[str], what: str = "assets and tasks", shown: int = 12) -> str:
    """`did you mean 'x'?` for close names, else the known names (or that there are none)."""
    close = difflib.get_close_matches(name, known, n=3)
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}?"
    if not known:
        return f"it has no {what}"
    more = f" and {len(known) - shown} more" if len(known) > shown else ""
    return f"its {what}: {', '.join(known[:shown])}{more}"
