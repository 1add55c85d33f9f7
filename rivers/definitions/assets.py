"""Asset definitions: single, multi-output and external assets (API.md §2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from rivers.definitions.nodes import NodeDefinition, reject_reserved
from rivers.definitions.policies import Compute, Hook, RetryPolicy
from rivers.exceptions import AssetDefinitionError
from rivers.io.base import BaseIOHandler

T = TypeVar("T")


class AssetDef:
    """An output of a multi-asset, or (via `input` / `dep`) how an asset uses an upstream."""

    def __init__(
        self,
        name: str,
        io_handler: BaseIOHandler | str | None = None,
        metadata: dict[str, str] | None = None,
        *,
        role: str = "output",
    ) -> None:
        self.name = name
        self.io_handler = io_handler
        self.metadata = dict(metadata or {})
        self.role = role

    @staticmethod
    def input(
        name: str, io_handler: BaseIOHandler | str | None = None, metadata: dict[str, str] | None = None
    ) -> AssetDef:
        """Override how the upstream `name` is loaded for this asset."""
        return AssetDef(name, io_handler, metadata, role="input")

    @staticmethod
    def dep(name: str) -> AssetDef:
        """An ordering-only edge: run after `name`, load nothing."""
        return AssetDef(name, role="dep")

    def __repr__(self) -> str:
        return f"AssetDef({self.name!r}, role={self.role!r})"


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
        if not args:
            return lambda f: SingleAsset(f, **kwargs)
        return super().__new__(SingleAsset)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssetDefinitionError(
            f"Asset '{self.name}' cannot be called directly; materialize it, or call `_asset_fn` for the plain function"
        )

    @staticmethod
    def from_multi(
        output_defs: list[AssetDef],
        name: str | None = None,
        **kwargs: Any,
    ) -> Callable[[Callable[..., Any]], MultiAsset]:
        return lambda fn: MultiAsset(fn, output_defs=output_defs, name=name, **kwargs)

    @staticmethod
    def external(
        name: str,
        io_handler: BaseIOHandler | str | None = None,
        kinds: str | list[str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> ExternalAsset:
        return ExternalAsset(name=name, io_handler=io_handler, kinds=kinds, metadata=metadata)

    @staticmethod
    def from_graph(name: str | None = None, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        from rivers.definitions.graph import GraphAsset

        return lambda fn: GraphAsset(fn, name=name, **kwargs)

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
        deps: list[AssetDef] | None,
        hooks: list[Hook] | None,
        retry: RetryPolicy | str | None,
        compute: Compute | None,
    ) -> None:
        self._init_node(fn, name, tags, io_handler, metadata, retry, hooks)
        self.kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
        self.group = group
        self.code_version = code_version
        self.deps = list(deps or [])
        for dep in self.deps:
            if not isinstance(dep, AssetDef):
                raise AssetDefinitionError(
                    f"deps of asset '{self.name}' must be AssetDef values (AssetDef.dep / AssetDef.input), got {dep!r}"
                )
        self.compute = compute
        self._asset_fn = fn


class SingleAsset(Asset):
    """An asset computed by one function."""

    kind = "asset"

    def __init__(
        self,
        fn: Callable[..., Any],
        /,
        *,
        name: str | None = None,
        tags: list[str] | None = None,
        kinds: str | list[str] | None = None,
        group: str | None = None,
        code_version: str | None = None,
        io_handler: BaseIOHandler | str | None = None,
        metadata: dict[str, str] | None = None,
        deps: list[AssetDef] | None = None,
        hooks: list[Hook] | None = None,
        retry: RetryPolicy | str | None = None,
        compute: Compute | None = None,
        **reserved: Any,
    ) -> None:
        reject_reserved("Asset", reserved)
        self._init_asset(
            fn, name=name, tags=tags, kinds=kinds, group=group, code_version=code_version,
            io_handler=io_handler, metadata=metadata, deps=deps, hooks=hooks, retry=retry, compute=compute,
        )


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
        deps: list[AssetDef] | None = None,
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

    @property
    def output_names(self) -> list[str]:
        return [out.name for out in self.output_defs]


class ExternalAsset(Asset):
    """A source asset: loaded through its IO handler, never run."""

    kind = "external"

    def __init__(
        self,
        *,
        name: str,
        io_handler: BaseIOHandler | str | None = None,
        kinds: str | list[str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self._init_asset(
            None, name=name, tags=None, kinds=kinds, group=None, code_version=None, io_handler=io_handler,
            metadata=metadata, deps=None, hooks=None, retry=None, compute=None,
        )
