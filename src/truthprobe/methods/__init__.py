"""Methods the harness runs: zero-shot, probes at every layer, ICL (+CoT) and QLoRA (+CoT).

The built-in methods register themselves the first time methods are built (so validating a
config never imports torch); `register_method` adds more.
"""

from truthprobe.methods.base import (
    METHODS,
    Method,
    MethodContext,
    MethodOutput,
    Models,
    TaskStates,
    build_methods,
    register_method,
)
from truthprobe.methods.settings import (
    CoTSettings,
    ICLSettings,
    MethodSettings,
    ProbeSettings,
    QLoRASettings,
)

__all__ = [
    "METHODS",
    "CoTSettings",
    "ICLSettings",
    "Method",
    "MethodContext",
    "MethodOutput",
    "MethodSettings",
    "Models",
    "ProbeSettings",
    "QLoRASettings",
    "TaskStates",
    "build_methods",
    "register_method",
]
