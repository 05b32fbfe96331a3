"""hermes-delegate: fan subtasks out in parallel, each on the model it names, through LiteLLM's Router.

The public API is what this module exports; every other module is an implementation detail.
Importing it does not import litellm (that happens on the first run).
"""

from .core.config import Config, DelegationSettings
from .sources.config_file import config_from_dict, load_config, load_tasks
from .runtime.delegator import Delegator, coerce_tasks
from .core.errors import (
    AmbiguousModelError,
    BatchValidationError,
    BudgetError,
    ConfigError,
    DelegateError,
    NotAllowedError,
    ProviderError,
    SpecError,
    TaskPayloadError,
    TaskProblem,
    UnknownModelError,
    UnknownProviderError,
    UsageError,
)
from .core.planning import PlannedTask, Task
from .core.resolver import Resolution, Resolver
from .core.providers import provider_for_slug
from .core.results import Attempt, BatchResult, DeploymentInfo, ProgressEvent, TaskResult
from .core.grammar import ModelSpec, parse_model_string
from .tools.delegate_tools import DelegateTools, internal_error, tool_error
from .runtime.worker import Job, Worker, WorkerOutput


def _version() -> str:
    """The installed distribution's version: pyproject.toml is the one place it is written."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("hermes-delegate")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


__version__ = _version()

__all__ = [
    "AmbiguousModelError",
    "Attempt",
    "BatchResult",
    "BatchValidationError",
    "BudgetError",
    "Config",
    "ConfigError",
    "DelegateError",
    "DelegateTools",
    "DelegationSettings",
    "Delegator",
    "DeploymentInfo",
    "Job",
    "ModelSpec",
    "NotAllowedError",
    "PlannedTask",
    "ProgressEvent",
    "ProviderError",
    "Resolution",
    "Resolver",
    "SpecError",
    "Task",
    "TaskPayloadError",
    "TaskProblem",
    "TaskResult",
    "UnknownModelError",
    "UnknownProviderError",
    "UsageError",
    "Worker",
    "WorkerOutput",
    "coerce_tasks",
    "config_from_dict",
    "internal_error",
    "load_config",
    "load_tasks",
    "parse_model_string",
    "provider_for_slug",
    "tool_error",
]
