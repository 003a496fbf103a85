"""Measure: step time and memory vs micro-batch, forward latency vs batch, and all-reduce times."""

from .allreduce import measure_allreduce
from .hardware import PROFILE_SCHEMA, Target, enable_checkpointing, is_out_of_memory, profile_hardware, save_profile
from .targets import user_target, workload_target

__all__ = ["PROFILE_SCHEMA", "Target", "profile_hardware", "save_profile", "is_out_of_memory",
           "enable_checkpointing", "measure_allreduce", "user_target", "workload_target"]
