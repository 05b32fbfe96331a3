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
from .worker import Job, Worker, WorkerOutput

__version__ = "0.1.0"

__all__ = [
    "AmbiguousModelError",
    "Attempt",
    "BatchResult",
    "BatchValidationError",
    "BudgetError",
    "Config",
    "ConfigError",
    "DelegateError",
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
]
