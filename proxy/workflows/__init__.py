"""Workflow templates: ComfyUI API-format graphs plus the declaration of their parameters."""

from proxy.workflows.registry import Workflow, WorkflowRegistry, load_registry
from proxy.workflows.spec import Binding, ParamSpec, WorkflowSpec

__all__ = [
    "Binding",
    "ParamSpec",
    "Workflow",
    "WorkflowRegistry",
    "WorkflowSpec",
    "load_registry",
]
