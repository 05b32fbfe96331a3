"""hermes-delegate: fan subtasks out in parallel, each on the model it names, through LiteLLM's Router.

The public API is what this module exports; every other module is an implementation detail.
Importing it does not import litellm (that happens on the first run).
"""

from .config import Config, DelegationSettings, config_from_dict, load_config
from .engine import Delegator, coerce_tasks
from .errors import (
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
from .planning import PlannedTask, Task
from .resolve import Resolution, Resolver
from .results import Attempt, BatchResult, DeploymentInfo, ProgressEvent, TaskResult
from .spec import ModelSpec, parse_model_string
from .tools import DelegateTools, tool_error
from .worker import Job, Worker, WorkerOutput


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
    "load_config",
    "parse_model_string",
    "tool_error",
]
