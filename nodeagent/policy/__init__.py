"""NetworkPolicy, pure: compile Pods, Namespaces and NetworkPolicies into per-pod rule sets, judge new
connections (`PolicyCompiler.verdict` is the forwarding pipeline's `policy(direction, flow)` hook),
compute the static truth table and explain one connection."""

from .compile import PolicyCompiler, PolicyError, compile_objects
from .evaluate import Evaluator
from .matrix import Explanation, Matrix, explain, static_matrix
from .model import EGRESS, INGRESS, Flow, Verdict
from .render import TruthTable, parse_table, render_comparison, render_table

__all__ = [
    "EGRESS",
    "INGRESS",
    "Evaluator",
    "Explanation",
    "Flow",
    "Matrix",
    "PolicyCompiler",
    "PolicyError",
    "TruthTable",
    "Verdict",
    "compile_objects",
    "explain",
    "parse_table",
    "render_comparison",
    "render_table",
    "static_matrix",
]
