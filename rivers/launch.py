"""A run's `config=` launch document: per-step config, resource overrides, this run's executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rivers.definitions.executors import Executor
from rivers.exceptions import ConfigurationError

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
        raise ConfigurationError(
            f"run config has an unknown section '{unknown[0]}'; expected one of: {', '.join(SECTIONS)}"
        )
    steps = {step: _step_config(step, value) for step, value in (config.get("assets") or {}).items()}
    resources = dict(config.get("resources") or {})
    for key, value in resources.items():
        if not isinstance(value, dict):
            raise ConfigurationError(f"run config for resource '{key}' must be a dict of fields")
    return LaunchConfig(steps, resources, _executor(config.get("execution")))


def _step_config(step: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigurationError(f"run config for '{step}' must be a dict, got {type(value).__name__}")
    if set(value) == {"config"} and isinstance(value["config"], dict):
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
