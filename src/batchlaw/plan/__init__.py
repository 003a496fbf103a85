"""Decide: GPUs, batch, steps, wall-clock and cost for a target; serving batch settings."""

from .bucketing import padding_waste, recommend_buckets
from .comm import LINKS, Link, exposed_comm_time, fit_link, get_link, ring_allreduce_time
from .planner import Plan, PlanRow, plan_run, throughput_from_flops
from .profile_data import HardwareProfile, LatencyCurve, ServingOverhead, check_profile, load_profile
from .serve import SLO, ServeResult, poisson_arrivals, recommend_serving, simulate_batcher

__all__ = ["Plan", "PlanRow", "plan_run", "throughput_from_flops", "LINKS", "Link", "get_link",
           "ring_allreduce_time", "exposed_comm_time", "fit_link", "HardwareProfile", "LatencyCurve",
           "load_profile", "check_profile", "ServingOverhead", "SLO", "ServeResult", "poisson_arrivals", "simulate_batcher", "recommend_serving",
           "padding_waste", "recommend_buckets"]
