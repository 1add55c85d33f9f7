"""Asset definitions: single, multi-output and external assets (API.md §2)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from rivers.definitions.nodes import RESERVED_KWARGS, NodeDefinition, check_tags, reject_reserved
from rivers.definitions.policies import Compute, Hook, RetryPolicy
from rivers.definitions.resources import check_io_handler_argument
from rivers.exceptions import AssetDefinitionError
from rivers.io.base import BaseIOHandler

if TYPE_CHECKING:
    from rivers.definitions.graph import GraphAsset

T = TypeVar("T")


class DepDef:
    """One upstream edge of an asset: an input (`AssetDef.input`) or an ordering-only dep (`AssetDef.dep`)."""

    def __init__(
        self, name: str, *, is_input: bool, io_handler: BaseIOHandler | str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        check_io_handler_argument(io_handler)  # issue 10: refused when defined, as rivers 0.6
        self.name = name
        self.is_input = is_input
        self.io_handler = io_handler
        self.metadata = dict(metadata) if metadata is not None else None
        self.partition_mapping = None

    @property
    def role(self) -> str:
        return "input" if self.is_input else "dep"

    def __repr__(self) -> str:
        return f"DepDef.{self.role}({self.name!r})"


def check_deps(deps: Any) -> list[DepDef]:
    """A copy of `deps`; as rivers 0.6, a TypeError unless it is a list of DepDef values."""
    if not isinstance(deps, (list, tuple)):
        what = "'None' is" if deps is None else f"'{type(deps).__name__}' object is"
        raise TypeError(f"{what} not an instance of 'Sequence' (deps takes a list of AssetDef.dep / AssetDef.input)")
    for dep in deps:
        if not isinstance(dep, DepDef):
            raise TypeError(
                f"'{type(dep).__name__}' object is not an instance of 'DepDef' "
                f"(declare deps with AssetDef.dep(name) or AssetDef.input(name))"
            )
    return list(deps)


def _no_partition_mapping(kind: str, partition_mapping: Any) -> None:
    if partition_mapping is not None:
        raise NotImplementedError(f"{kind}(partition_mapping=...) is not supported by this version of rivers")


class AssetDef:
    """An output of a multi-asset; `AssetDef.input` / `AssetDef.dep` declare an asset's upstream edges."""

    def __init__(
        self,
        name: str,
        io_handler: BaseIOHandler | str | None = None,
        metadata: dict[str, str] | None = None,
        *,
        tags: list[str] | None = None,
        kinds: str | list[str] | None = None,
        group: str | None = None,
        code_version: str | None = None,
        deps: list[DepDef] | None = None,
        type_hint: Any = None,
        **reserved: Any,
    ) -> None:
        reject_reserved("AssetDef", reserved)
        check_io_handler_argument(io_handler)  # issue 10: refused when defined, as rivers 0.6
        if isinstance(type_hint, str):  # rivers 0.6.2's words: there is no module to resolve a string in
            raise AssetDefinitionError(f"type_hint must be a type, not the string {type_hint!r} (AssetDef {name!r})")
        self.name = name
        self.type_hint = type_hint  # the output's value is checked against it, and OutputContext.type_hint gets it
        self.io_handler = io_handler
        self.metadata = dict(metadata or {})
        self.tags = check_tags(f"AssetDef {name!r}", tags)
        self.kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
        self.group = group
        self.code_version = code_version
        self.deps = [] if deps is None else deps

    @property
    def deps(self) -> list[DepDef]:
        """This output's own upstream edges (a multi-asset adds them to its step's)."""
        return list(self._deps)

    @deps.setter
    def deps(self, value: list[DepDef]) -> None:
        self._deps = check_deps(value)

    @staticmethod
    def input(
        name: str, io_handler: BaseIOHandler | str | None = None, metadata: dict[str, str] | None = None,
        *, partition_mapping: Any = None,
    ) -> DepDef:
        """Override how the upstream `name` is loaded for this asset."""
        _no_partition_mapping("AssetDef.input", partition_mapping)
        return DepDef(name, is_input=True, io_handler=io_handler, metadata=metadata)

    @staticmethod
    def dep(name: str, *, partition_mapping: Any = None) -> DepDef:
        """An ordering-only edge: run after `name`, load nothing."""
        _no_partition_mapping("AssetDef.dep", partition_mapping)
        return DepDef(name, is_input=False)

    def __repr__(self) -> str:
        return f"AssetDef({self.name!r})"


class SelfDependency(Generic[T]):
    """The asset's own previous value, loaded through its own IO handler."""

    def __init__(self, value: T | None) -> None:
        self._value = value

    def get_inner(self) -> T | None:
        return self._value

    def __repr__(self) -> str:
        return f"SelfDependency({self._value!r})"


class Asset(NodeDefinition):
    """`@rs.Asset` / `@rs.Asset(...)`; also the base class of every asset kind."""

    kind = "asset"

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is not Asset:
            return super().__new__(cls)
        check_keywords("Asset.__new__", kwargs, SingleAsset.__init__)
        if args and "wraps" in kwargs:
            raise TypeError("Asset.__new__() got multiple values for argument 'wraps'")
        if not args and kwargs.get("wraps") is None:  # `@rs.Asset(...)`: a decorator
            kwargs.pop("wraps", None)
            return lambda f: SingleAsset(f, **kwargs)
        return super().__new__(SingleAsset)  # `rs.Asset(fn, ...)` / `rs.Asset(wraps=fn, ...)`

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from rivers.definitions.graph import recording_graph  # issue 10: in a graph body, a dependency

        recorder = recording_graph()
        if recorder is not None:
            return recorder.record_asset_call(self, args, kwargs)
        raise AssetDefinitionError(
            f"asset '{self.name}' already wraps a function; call it only inside an Asset.from_graph body "
            f"(materialize it, or call `_asset_fn` for the plain function)"
        )

    @staticmethod
    def from_multi(
        wraps: Callable[..., Any] | None = None,
        output_defs: list[AssetDef] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> MultiAsset | Callable[[Callable[..., Any]], MultiAsset]:
        """`@rs.Asset.from_multi(output_defs=[...])`, or directly `rs.Asset.from_multi(fn, output_defs=[...])`."""
        check_keywords("Asset.from_multi", kwargs, MultiAsset.__init__)
        if isinstance(wraps, (list, tuple)) and output_defs is None:  # `from_multi([AssetDef(...), ...])`
            wraps, output_defs = None, list(wraps)

        def build(fn: Callable[..., Any]) -> MultiAsset:
            return MultiAsset(fn, output_defs=output_defs or [], name=name, **kwargs)

        return build if wraps is None else build(wraps)

    @staticmethod
    def external(
        wraps: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        io_handler: BaseIOHandler | str | None = None,
        tags: list[str] | None = None,
        kinds: str | list[str] | None = None,
        group: str | None = None,
        metadata: dict[str, str] | None = None,
        **reserved: Any,
    ) -> ExternalAsset:
        """A source produced outside rivers, loaded through `io_handler`, never run.

        Used as a decorator (`@rs.Asset.external(io_handler=...)`), the function is the asset's observe
        function: `repo.observe()` calls it and it may return an `rs.Observation`.
        """
        check_keywords("Asset.external", reserved, ExternalAsset.__init__)
        asset = ExternalAsset(
            None, name=name, io_handler=io_handler, tags=tags, kinds=kinds, group=group, metadata=metadata,
            **reserved,
        )
        return asset if wraps is None else asset(wraps)

    @staticmethod
    def from_graph(
        wraps: Callable[..., Any] | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> GraphAsset | Callable[[Callable[..., Any]], GraphAsset]:
        """`@rs.Asset.from_graph`, `@rs.Asset.from_graph(...)`, or directly `rs.Asset.from_graph(body, ...)`."""
        from rivers.definitions.graph import GraphAsset

        check_keywords("Asset.from_graph", kwargs, GraphAsset.__init__)
        if isinstance(wraps, str) and name is None:  # `from_graph("name")`: the name, as this API took it first
            wraps, name = None, wraps

        def build(fn: Callable[..., Any]) -> GraphAsset:
            return GraphAsset(fn, name=name, **kwargs)

        return build if wraps is None else build(wraps)

    def _init_asset(
        self,
        fn: Callable[..., Any] | None,
        *,
        name: str | None,
        tags: list[str] | None,
        kinds: str | list[str] | None,
        group: str | None,
        code_version: str | None,
        io_handler: BaseIOHandler | str | None,
        metadata: dict[str, str] | None,
        deps: list[DepDef] | None,
        hooks: list[Hook] | None,
        retry: RetryPolicy | str | None,
        compute: Compute | None,
    ) -> None:
        check_io_handler_argument(io_handler)  # issue 10: refused when defined, as rivers 0.6
        self._init_node(fn, name, tags, io_handler, metadata, retry, hooks)
        self.kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
        self.group = group
        self.code_version = code_version
        self.deps = [] if deps is None else check_deps(deps)
        self.compute = compute
        self._asset_fn = fn


class SingleAsset(Asset):
    """An asset computed by one function."""

    kind = "asset"

    def __init__(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        wraps: Callable[..., Any] | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        kinds: str | list[str] | None = None,
        group: str | None = None,
        code_version: str | None = None,
        io_handler: BaseIOHandler | str | None = None,
        metadata: dict[str, str] | None = None,
        deps: list[DepDef] | None = None,
        hooks: list[Hook] | None = None,
        retry: RetryPolicy | str | None = None,
        compute: Compute | None = None,
        **reserved: Any,
    ) -> None:
        reject_reserved("Asset", reserved)
        fn = wrapped_function("SingleAsset", fn, wraps)
        self._init_asset(
            fn, name=name, tags=tags, kinds=kinds, group=group, code_version=code_version,
            io_handler=io_handler, metadata=metadata, deps=deps, hooks=hooks, retry=retry, compute=compute,
        )
        check_inputs_match(self.name, fn, self.deps)


class MultiAsset(Asset):
    """One function, several outputs, each an asset name of its own."""

    kind = "multi_asset"

    def __init__(
        self,
        fn: Callable[..., Any],
        /,
        *,
        output_defs: list[AssetDef],
        name: str | None = None,
        tags: list[str] | None = None,
        kinds: str | list[str] | None = None,
        group: str | None = None,
        code_version: str | None = None,
        io_handler: BaseIOHandler | str | None = None,
        metadata: dict[str, str] | None = None,
        deps: list[DepDef] | None = None,
        hooks: list[Hook] | None = None,
        retry: RetryPolicy | str | None = None,
        compute: Compute | None = None,
        **reserved: Any,
    ) -> None:
        reject_reserved("Asset.from_multi", reserved)
        self._init_asset(
            fn, name=name, tags=tags, kinds=kinds, group=group, code_version=code_version,
            io_handler=io_handler, metadata=metadata, deps=deps, hooks=hooks, retry=retry, compute=compute,
        )
        if not output_defs:
            raise AssetDefinitionError(f"Multi-asset '{self.name}' needs at least one AssetDef in output_defs")
        seen: set[str] = set()
        for out in output_defs:
            if not isinstance(out, AssetDef):
                raise AssetDefinitionError(f"output_defs of '{self.name}' must be AssetDef values, got {out!r}")
            if out.name in seen:
                raise AssetDefinitionError(f"Multi-asset '{self.name}' declares output '{out.name}' twice")
            seen.add(out.name)
        self.output_defs = list(output_defs)
        # the outputs run as one step: an output's own deps are edges of that step
        known = {dep.name for dep in self.deps}
        for dep in (dep for out in self.output_defs for dep in out.deps):
            if dep.name not in known:
                known.add(dep.name)
                self.deps.append(dep)
        check_inputs_match(self.name, fn, self.deps)

    @property
    def output_names(self) -> list[str]:
        return [out.name for out in self.output_defs]

    def output_type_hint(self, output: str) -> Any:
        """The `AssetDef(type_hint=...)` of one output (None when it has none)."""
        return next((out.type_hint for out in self.output_defs if out.name == output), None)


class ExternalAsset(Asset):
    """A source asset: loaded through its IO handler, never run; optionally observed by `observe_fn`."""

    kind = "external"

    def __init__(
        self,
        observe_fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        io_handler: BaseIOHandler | str | None = None,
        tags: list[str] | None = None,
        kinds: str | list[str] | None = None,
        group: str | None = None,
        metadata: dict[str, str] | None = None,
        **reserved: Any,
    ) -> None:
        reject_reserved("Asset.external", reserved)
        if io_handler is None:
            raise AssetDefinitionError(
                f"External assets require an io_handler: '{name or getattr(observe_fn, '__name__', '?')}' "
                "is loaded through it, never computed"
            )
        self._given_name = name
        self._init_asset(
            None, name=name or getattr(observe_fn, "__name__", None), tags=tags, kinds=kinds, group=group,
            code_version=None, io_handler=io_handler, metadata=metadata, deps=None, hooks=None, retry=None,
            compute=None,
        )
        self._observe_fn = observe_fn
        if observe_fn is not None:
            self.__doc__ = observe_fn.__doc__
            self.__module__ = observe_fn.__module__
            self.__qualname__ = observe_fn.__qualname__
            self.__wrapped__ = observe_fn

    @property
    def name(self) -> str:
        if not self._name:
            raise AssetDefinitionError(
                "Asset has no name: an `Asset.external(...)` decorator needs a function (or name=) to become an asset"
            )
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = value

    @property
    def observe_fn(self) -> Callable[..., Any] | None:
        """The function `repo.observe()` calls (None when the asset has none)."""
        return self._observe_fn

    @property
    def is_async(self) -> bool:
        fn = self._observe_fn
        return fn is not None and inspect.iscoroutinefunction(fn)

    def __repr__(self) -> str:
        return f"ExternalAsset(name={self._name!r})" if self._name else "ExternalAsset(<no function yet>)"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """`external(fn)`: a new external asset with the same settings and `fn` as its observe function."""
        if len(args) != 1 or kwargs or isinstance(args[0], Asset):
            return super().__call__(*args, **kwargs)
        if self._observe_fn is not None:
            raise AssetDefinitionError(f"external asset '{self.name}' already has an observe function")
        fn = args[0]
        if not callable(fn):
            raise AssetDefinitionError(
                f"the Asset decorator needs one function, e.g. `@rs.Asset.external(io_handler=...)` on a def; "
                f"got {type(fn).__name__}"
            )
        return ExternalAsset(
            fn, name=self._given_name, io_handler=self.io_handler, tags=self.tags, kinds=self.kinds,
            group=self.group, metadata=self.metadata or None,
        )


class Observation:
    """What an external asset's observe function returns: metadata and a data version, no value."""

    def __init__(
        self,
        *,
        output_name: str | None = None,
        metadata: dict[str, Any] | None = None,
        data_version: str | None = None,
    ) -> None:
        if metadata is not None and not isinstance(metadata, dict):
            raise TypeError(f"Observation metadata must be a dict, got {type(metadata).__name__}")
        self._output_name = output_name
        self._metadata = dict(metadata) if metadata is not None else None
        self._data_version = data_version

    @property
    def output_name(self) -> str | None:
        return self._output_name

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self._metadata

    @property
    def data_version(self) -> str | None:
        return self._data_version

    def __repr__(self) -> str:
        shown = [f"{key}={value!r}" for key, value in
                 (("output_name", self._output_name), ("data_version", self._data_version)) if value is not None]
        return f"Observation({', '.join(shown)})"


def wrapped_function(kind: str, fn: Any, wraps: Any) -> Any:
    """The function of `Kind(fn)` or `Kind(wraps=fn)` (rivers 0.6 names its first parameter `wraps`)."""
    if fn is not None and wraps is not None:
        raise TypeError(f"{kind}() got multiple values for argument 'wraps'")
    fn = wraps if fn is None else fn
    if fn is None:
        raise TypeError(f"{kind} needs a function, got None")
    return fn


def check_inputs_match(asset: str, fn: Callable[..., Any], deps: list[DepDef]) -> None:
    """Each `AssetDef.input(name)` must name a parameter of the function that is an input (rivers 0.6.2: ValueError).

    Parameters with a default, `*args` and `**kwargs` are never inputs (API.md §2), so they do not count.
    """
    inputs = [dep.name for dep in deps if dep.is_input]
    if not inputs:
        return
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature: nothing to check against
        return
    bindable = [p.name for p in parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.default is p.empty]
    for name in inputs:
        if name in bindable:
            continue
        if name in parameters:
            what = "has a default value" if parameters[name].default is not inspect.Parameter.empty else "is variadic"
            raise ValueError(
                f"AssetDef.input({name!r}) of asset '{asset}' names the parameter '{name}', which {what} "
                f"and so is never an input"
            )
        available = ", ".join(repr(p) for p in bindable) or "none"
        raise ValueError(
            f"AssetDef.input({name!r}) of asset '{asset}' does not match any parameter on the function "
            f"(available parameters: {available})"
        )


def check_keywords(kind: str, kwargs: dict[str, Any], init: Callable[..., Any]) -> None:
    """Refuse a keyword the definition does not take when the decorator is built, as rivers 0.6 does."""
    accepted = set(inspect.signature(init).parameters) | set(RESERVED_KWARGS)
    for key in kwargs:
        if key not in accepted:
            raise TypeError(f"{kind}() got an unexpected keyword argument '{key}'")
