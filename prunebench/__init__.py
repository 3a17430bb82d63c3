"""prunebench: vision-token pruning methods for VLMs behind one hook interface.

Public API::

    from prunebench import register_method, list_methods, create_method      # registry (timm-style)
    from prunebench import ScoredVisionPruner, ScoredLLMPruner                  # a method = its score(view)
    from prunebench import PruningMethod, VisionStagePruner, SingleCutLLMPruner, Selection, Plan, top_k
    from prunebench import Pruner, load_model                                 # run a method on a model
"""

__version__ = "0.1.0"

from prunebench.bases import ScoredLLMPruner, ScoredVisionPruner
from prunebench.core import (
    BudgetError,
    InfeasibleBudget,
    Plan,
    PlanContext,
    PruneBenchError,
    PruningMethod,
    Selection,
    SelectionError,
    SingleCutLLMPruner,
    UnsupportedModel,
    VisionStagePruner,
    solve_cuts,
    solve_single_cut,
    top_k,
)
from prunebench.engine import Pruner
from prunebench.models import load_model
from prunebench.registry import create_method, list_methods, register_method

__all__ = [
    "BudgetError",
    "InfeasibleBudget",
    "Plan",
    "PlanContext",
    "PruneBenchError",
    "Pruner",
    "PruningMethod",
    "ScoredLLMPruner",
    "ScoredVisionPruner",
    "Selection",
    "SelectionError",
    "SingleCutLLMPruner",
    "UnsupportedModel",
    "VisionStagePruner",
    "create_method",
    "list_methods",
    "load_model",
    "register_method",
    "solve_cuts",
    "solve_single_cut",
    "top_k",
]
