"""Decide: GPUs, batch, steps, wall-clock and cost for a target."""

from .planner import Plan, PlanRow, plan_run

__all__ = ["Plan", "PlanRow", "plan_run"]
