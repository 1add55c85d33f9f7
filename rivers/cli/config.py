"""`--config FILE` and `--set asset.field=value`: a run's config from the command line, checked before it runs.

The file holds the launch document of API.md §5 (`{"assets": {step: {"config": {...}}}, "resources": {...},
"execution": {...}}`, or the older flat `{step: {...}}`), as YAML or JSON. Each `--set` writes one field of
one asset's config over the file's; its value is JSON when it parses as JSON (`3`, `true`, `[1, 2]`,
`"3"`) and the field takes that, else the text itself (a text field given `1.10` gets '1.10').
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from rivers.cli import UsageError
from rivers.launch import SECTIONS, check_launch

if TYPE_CHECKING:
    from rivers.definitions.repository import CodeRepository
    from rivers.resolve import ResolvedGraph


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="the run's config: a YAML or JSON launch document, "
                             "{assets: {ASSET: {config: {FIELD: VALUE}}}, resources: {...}, execution: {...}} "
                             "(default: none)")
    parser.add_argument("--set", action="append", metavar="ASSET.FIELD=VALUE", dest="set_fields",
                        help="set one config field of one asset, over --config; repeatable; VALUE is JSON when it "
                             "parses as JSON and the field takes it, else text (default: none)")


@dataclass
class SetText:
    """Where one --set wrote its value, and the text it was given (a text field keeps `3` as '3')."""

    asset: str
    fields: list[str]
    container: dict[str, Any]
    text: str


class LaunchDocument(dict[str, Any]):
    """The launch document, remembering the texts --set gave (check_run_config reads them)."""

    def __init__(self, document: dict[str, Any]) -> None:
        super().__init__(document)
        self.set_texts: list[SetText] = []


def run_config(args: argparse.Namespace) -> dict[str, Any] | None:
    """The launch document --config and --set describe (--set wins), or None when neither is given."""
    path, sets = getattr(args, "config", None), getattr(args, "set_fields", None) or []
    if path is None and not sets:
        return None
    document = LaunchDocument(launch_form(load_file(path)) if path is not None else {})
    for item in sets:
        document.set_texts.append(apply_set(document, item))
    return document


def load_file(path: str) -> dict[str, Any]:
    """A YAML or JSON mapping; a usage error naming the file when it is missing or does not parse."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    if file.suffix == ".json":
        document = _json(path, text)
    else:
        document = _yaml(path, text)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise UsageError(f"--config {path}: expected a mapping of sections (assets, resources, execution), "
                         f"got {type(document).__name__}")
    return document


def _json(path: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise UsageError(f"--config {path}: not valid JSON: {exc.msg} ({where})") from None


def _yaml(path: str, text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"--config {path}: not valid YAML or JSON: {problem}{at}") from None


def launch_form(document: dict[str, Any]) -> dict[str, Any]:
    """The older flat form `{step: {...}}` rewritten as `{"assets": {step: {...}}}`, so that --set can merge."""
    if document and not any(key in SECTIONS for key in document):
        return {"assets": dict(document)}
    return dict(document)


def apply_set(document: dict[str, Any], item: str) -> SetText:
    """Write `asset.field=value` (`asset.field.sub=value` for a nested model) into the launch document."""
    target, equals, raw = item.partition("=")
    asset, _, path = target.partition(".")
    fields = path.split(".")
    if not equals or not asset or not all(fields):
        raise UsageError(f"--set {item}: expected ASSET.FIELD=VALUE (e.g. --set revenue_report.currency=USD)")
    assets = document.setdefault("assets", {})
    if not isinstance(assets, dict):
        raise UsageError(f"--set {item}: the config's 'assets' section is not a mapping")
    entry = assets.setdefault(asset, {"config": {}})
    if not isinstance(entry, dict):
        raise UsageError(f"--set {item}: the config of '{asset}' is not a mapping")
    config = entry.setdefault("config", {}) if "config" in entry or not entry else entry
    for name in fields[:-1]:
        config = config.setdefault(name, {})
        if not isinstance(config, dict):
            raise UsageError(f"--set {item}: '{name}' of '{asset}' is not a mapping")
    config[fields[-1]] = parse_value(raw)
    return SetText(asset, fields, config, raw)


def parse_value(raw: str) -> Any:
    """JSON when it parses (`3`, `1.5`, `true`, `null`, `[1]`, `{"a": 1}`, `"3"`), else the text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def keep_text(graph: ResolvedGraph, given: SetText) -> None:
    """`--set report.version=1.10` for a text field is '1.10', not the JSON number 1.1: the JSON reading of a
    --set value stands when the field takes it as it is, else the text the user typed when the field takes that."""
    node = graph.nodes.get(given.asset)
    annotation: Any = node.config_type if node is not None else None
    for name in given.fields:
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return
        if name not in annotation.model_fields:
            return
        annotation = annotation.model_fields[name].annotation
    key = given.fields[-1]
    if not _accepts(annotation, given.container[key], strict=True) and _accepts(annotation, given.text):
        given.container[key] = given.text


def _accepts(annotation: Any, value: Any, strict: bool = False) -> bool:
    try:
        TypeAdapter(annotation).validate_python(value, strict=strict)
    except ValidationError:
        return False
    return True


def check_run_config(repo: CodeRepository, config: dict[str, Any] | None) -> None:
    """Every problem of the run's config, a line each (asset and field named), as one usage error."""
    if not config:
        return
    graph = repo._resolve()
    for given in getattr(config, "set_texts", []):
        keep_text(graph, given)
    problems = check_launch(graph, repo.resources, config, strict=True)
    if problems:
        count = "a problem" if len(problems) == 1 else f"{len(problems)} problems"
        raise UsageError(f"the run config has {count}; nothing ran:\n" + "\n".join(f"  {p}" for p in problems))


__all__ = ["add_config_arguments", "apply_set", "check_run_config", "load_file", "parse_value", "run_config"]
