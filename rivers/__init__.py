"""rivers: a Python orchestrator for data assets. `import rivers as rs`."""

from rivers.definitions.assets import (
    Asset,
    AssetDef,
    DepDef,
    ExternalAsset,
    MultiAsset,
    Observation,
    SelfDependency,
    SingleAsset,
)
from rivers.definitions.contexts import AssetExecutionContext, TaskExecutionContext
from rivers.definitions.executors import Executor
from rivers.definitions.graph import GraphAsset
from rivers.definitions.jobs import Job
from rivers.definitions.outputs import DynamicOutput, Materialization, MetadataValue, Output
from rivers.definitions.policies import (
    Backoff,
    Compute,
    ComputeEscalation,
    FailureReason,
    Hook,
    HookContext,
    RetryOn,
    RetryPolicy,
)
from rivers.definitions.repository import CodeRepository
from rivers.definitions.resources import Resource
from rivers.definitions.tasks import BashTask, Task
from rivers.exceptions import (
    AssetDefinitionError,
    AssetNotFoundError,
    AssetOutputValidationError,
    ConfigurationError,
    ExecutionError,
    GraphValidationError,
    NodeNotFoundError,
    TaskDefinitionError,
)
from rivers.io.base import BaseIOHandler, InputContext, OutputContext
from rivers.io.memory import InMemoryIOHandler
from rivers.io.pickle import PickleIOHandler
from rivers.results import RunResult
from rivers.version import RIVERS_VERSION

__version__ = RIVERS_VERSION  # the installed distribution's version (`rivers --version`)

__all__ = [
    "Asset", "AssetDef", "AssetDefinitionError", "AssetExecutionContext", "AssetNotFoundError",
    "AssetOutputValidationError", "Backoff", "BaseIOHandler", "BashTask", "CodeRepository", "Compute",
    "ComputeEscalation", "ConfigurationError", "DepDef",
    "DynamicOutput", "ExecutionError", "Executor", "ExternalAsset",
    "FailureReason", "GraphAsset",
    "GraphValidationError", "Hook", "HookContext", "InMemoryIOHandler", "InputContext", "Job", "Materialization",
    "MetadataValue", "MultiAsset", "NodeNotFoundError", "Observation",
    "Output", "OutputContext", "PickleIOHandler", "Resource",
    "RetryOn", "RetryPolicy", "RunResult", "SelfDependency", "SingleAsset", "Task", "TaskDefinitionError",
    "TaskExecutionContext",
]
