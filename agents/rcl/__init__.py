"""Reflective Context Learning: agents that learn in context space.

The learned object is a `Playbook`; one `Optimizer` runs the loop (actor -> verify -> reflect ->
mutate) with every primitive an option of `OptimizerConfig` (ACE-like and GEPA-like are
configurations: `ace_like`, `gepa_like`). Backends: `OpenAIBackend`, `TransformersBackend`,
`ScriptedBackend`. Environments: `load_rewardbench2`, `load_appworld`, and the simulated world in
`latentwire.agents.rcl.simulated`. On the bus: `latentwire.agents.rcl.bus`. CLI:
``latentwire rcl train --config FILE``. See docs/rcl.md.
"""

from .backends import LLMBackend, OpenAIBackend, ScriptedBackend, TransformersBackend, Usage
from .envs import Environment, Outcome, Task, Trajectory, load_appworld, load_rewardbench2
from .errors import BackendError, EnvironmentDataError, PlaybookError, RCLConfigError, RCLError
from .operations import Operation, Rejection, apply_operations, parse_operations
from .optimizer import Models, Optimizer, OptimizerConfig, ace_like, gepa_like
from .playbook import Entry, Playbook, PlaybookDiff

__all__ = [
    "BackendError", "Entry", "Environment", "EnvironmentDataError", "LLMBackend", "Models", "OpenAIBackend",
    "Operation", "Optimizer", "OptimizerConfig", "Outcome", "Playbook", "PlaybookDiff", "PlaybookError",
    "RCLConfigError", "RCLError", "Rejection", "ScriptedBackend", "Task", "TransformersBackend", "Trajectory",
    "Usage", "ace_like", "apply_operations", "gepa_like", "load_appworld", "load_rewardbench2",
    "parse_operations",
]
