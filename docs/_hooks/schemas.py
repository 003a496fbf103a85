"""The ``--json`` outputs of the ``batchlaw`` commands, documented in one place.

To document a new schema, append a :class:`Schema` to :data:`SCHEMAS`: the reference page
(``docs/reference-json.md``) is generated from this list at build time, and
``tests/test_docs_reference.py`` checks the top-level keys listed here against the real output
of each command whose ``check_args`` are given (a fast run of the command); a versioned schema
without ``check_args`` is checked against the dict literal that carries its name in ``src/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Schema:
    """One JSON output: its schema name, the command that prints it and its top-level keys."""

    name: str  # the value of the "schema" key, or a descriptive name where the output has none
    command: str  # how a user gets it
    summary: str
    fields: list[tuple[str, str]]  # (top-level key, what it holds)
    versioned: bool = True  # False: the output has no "schema" key yet
    check_args: list[str] = field(default_factory=list)  # fast CLI arguments for the drift test ([] = not run)

    @property
    def keys(self) -> set[str]:
        """The documented top-level keys."""
        return {k for k, _ in self.fields}


_ESTIMATE = ("an estimate: `b_simple`, `ci` [low, high] (`high` is null when unbounded), `g_sq`, `trace_sigma`, "
             "`n_steps`, `unit` (`examples` or `tokens`), `confidence`, `method`")
_STEPS_FIT = ("the fit of S(B) = S_min (1 + B_crit/B): `s_min`, `e_min`, `b_crit`, `cbs` and their `*_ci`, "
              "`reference_batch`, `n_points`, `residual_std`, `batch_range`, `unit`, `confidence`, `n_boot`, "
              "`outliers` ([batch, steps, steps over the law] of each point excluded as an outlier), "
              "`lower_bounds` ([batch, steps] of each point fitted as a lower bound: a censored median; "
              "`n_points` counts the others); null when the data cannot support a fit")
_SWEEP_FIELDS = [
    ("name", "the sweep's name inside the store"),
    ("config", "the sweep configuration (workload, batch_sizes, target_loss, max_steps, LR search settings, seeds)"),
    ("points", "one object per batch size: `batch_size`, `steps_to_target` (the median over seeds of each "
               "seed's fewest steps, a seed that reached the target at no learning rate counting as +inf; null "
               "when that median is censored), `censored` (true when it is), `steps_lower_bound` (the censored "
               "median's lower bound, else null), `n_seeds`, `n_censored` (seeds over the budget), `best_lr` "
               "(of the seed the median picks), `lrs_tried`, `lr_at_edge` (`low`/`high`/null)"),
    ("fit", _STEPS_FIT),
    ("fit_error", "why there is no fit (empty string when there is one)"),
    ("b_simple", "run-averaged noise scale pooled over the best trial of each batch size: `b_simple`, `ci`, "
                 "`n_trials`, `unit`; null when not measured"),
    ("tokens_per_example", "tokens per example of the workload (null for non-sequence workloads)"),
    ("n_trials", "trials stored for this sweep"),
    ("warnings", "what to check before trusting the answer, e.g. a steps-to-target reading under 3 evaluation "
                 "intervals"),
]

_TINY_SWEEP = ["--workload", "linreg", "--workload-arg", "condition=100", "--workload-arg", "init_distance=4",
               "--batch-sizes", "2,8,32,128", "--target-loss", "0.6", "--lr-base", "0.1", "--lr-scaling", "0.7",
               "--eval-every", "1", "--jobs", "1", "--no-progress"]

SCHEMAS: list[Schema] = [
    Schema(
        "batchlaw.measure/1", "batchlaw measure --json",
        "A training run of a built-in workload with the noise monitor attached.",
        [("schema", "`\"batchlaw.measure/1\"`"),
         ("workload", "the workload's name and settings (`name`, `tokens_per_example`, workload-specific keys)"),
         ("config", "`steps`, `micro_batch_size` (per process), `accumulation`, `world_size`, `batch_size` (global), "
                    "`lr`, `seed`, `every`, `estimate_window` [first, last step], `unit`. With `--nproc N` the output "
                    "also holds `single_process`: the same object for a one-process run with the same global batch"),
         ("estimate", _ESTIMATE + " over the second half of the run; null when the data refuse an estimate"),
         ("note", "why there is no estimate (empty otherwise)"),
         ("provisional_b_simple", "the value an refused estimate would have had (null otherwise)"),
         ("trace", "one object per window of steps: `step_start`, `step_end`, `n_steps`, `unit`, `b_simple`, "
                   "`ci`, `note` (why a window was refused, e.g. `steps too correlated for an interval`, or why "
                   "its interval is unbounded; empty otherwise) and `provisional` when refused"),
         ("eval_losses", "held-out loss along the run: objects with `step`, `loss`"),
         ("final_train_loss", "training loss at the last step"),
         ("skipped_steps", "steps skipped for non-finite gradients"),
         ("wall_time_s", "seconds of training")],
        check_args=["measure", "--workload", "linreg", "--steps", "60", "--no-progress", "--json"],
    ),
    Schema(
        "batchlaw.sweep/1", "batchlaw sweep ... --json",
        "The analysis of one sweep: steps to target per batch size, the steps-vs-batch fit, the pooled noise scale.",
        [("schema", "`\"batchlaw.sweep/1\"`"), *_SWEEP_FIELDS],
        check_args=["sweep", *_TINY_SWEEP, "--store", "{tmp}/s.db", "--json"],
    ),
    Schema(
        "batchlaw.report/1", "batchlaw report STORE --out DIR --json",
        "The report written for every sweep of a store.",
        [("schema", "`\"batchlaw.report/1\"`"),
         ("report", "path of the written `report.html`"),
         ("sweeps", "one object per sweep, with the keys of `batchlaw.sweep/1` (without `schema`)")],
        check_args=["report", "{tmp}/s.db", "--out", "{tmp}/rep", "--json"],
    ),
    Schema(
        "batchlaw.demo/2", "batchlaw demo --json",
        "The whole demo: a measurement, a known-answer check, a sweep and the batch controller against every "
        "constant batch.",
        [("schema", "`\"batchlaw.demo/2\"`"),
         ("measure", "a `batchlaw.measure/1` body (without `schema`) for the bytemlp workload"),
         ("check", "the known-answer check on linreg: `workload`, `analytic_b_simple`, `estimate` (as in measure)"),
         ("sweep", "a `batchlaw.sweep/1` body (without `schema`)"),
         ("compare", "a `batchlaw.schedule_compare/2` document: the controller and the constant batches 8 to 256 on "
                     "the noisy quadratic model"),
         ("report", "path of the written `report.html`")],
        # The demo takes about a minute: its keys are checked statically against the dict the code builds.
    ),
    Schema(
        "batchlaw.plan/1", "batchlaw plan ... --json",
        "What a run takes on each GPU count, which limit binds, and the recommendation; batch sizes in sequences.",
        [("schema", "`\"batchlaw.plan/1\"`"),
         ("b_crit", "critical batch size used, in sequences"),
         ("b_crit_tokens", "the same in tokens"),
         ("b_crit_ci", "interval [low, high] of `b_crit` (from `--b-crit-ci` or the sweep's fit), or null"),
         ("s_min", "minimum steps to the target (S_min); null without `--tokens`"),
         ("e_min_tokens", "minimum tokens to the target (E_min); null without `--tokens`"),
         ("seq_len", "tokens per sequence (1 with `--unit examples`)"),
         ("seq_len_source", "where `seq_len` came from: `--seq-len`, `the profile`, `the default` or "
                            "`--unit examples`"),
         ("b_crit_source", "`option` that gave B_crit; with `--b-crit-store` also `store` and `sweep`"),
         ("unit", "how batch sizes are shown: `sequences`, `examples` or `tokens`"),
         ("min_efficiency", "the efficiency threshold of the recommendation"),
         ("rows", "one object per GPU count listed: `gpus`, `global_batch`, `global_batch_tokens`, `micro_batch`, "
                  "`accumulation`, `steps_vs_min`, `steps`, `tokens`, `step_time_s`, `comm_time_s`, `wall_clock_h`, "
                  "`gpu_hours`, `cost`, `speedup_vs_1`, `efficiency` (against perfect linear scaling from one GPU), "
                  "`efficiency_range`, `doubling_efficiency`, `statistical_efficiency`, `systems_efficiency`, "
                  "`limit` (`statistical`, `communication` or `memory`), `over_critical`, `within_target`, `lr` "
                  "(steps and tokens null without `--tokens`; times without a throughput; cost without a price)"),
         ("recommended_gpus", "the largest GPU count (listed or not) that keeps the efficiency threshold"),
         ("recommended_gpus_range", "the same at the ends of the B_crit interval, or null"),
         ("recommended_listed_gpus", "the largest listed count that keeps it, or null"),
         ("reason", "the recommendation in words"),
         ("doubling", "one object per listed count g, for g -> 2g: `from`, `to`, `steps_ratio`, `speedup`, "
                      "`gpu_hours_ratio`, `efficiency_to`, `doubling_efficiency`, `worth_it`, `limit_to`, "
                      "`relative_time`, and with an interval `speedup_range`, `gpu_hours_ratio_range`"),
         ("notes", "remarks in words (memory, relative times, learning rates above B_crit)"),
         ("all_reduce", "only with `--link` or `--bandwidth`: `grad_bytes`, `bus_bandwidth_bytes_per_s`, "
                        "`latency_s`, `overlap`, `link`"),
         ("compute_optimal", "only with `--compute`: the Chinchilla allocation used"),
         ("inference_aware", "only with `--compute` and `--inference-tokens`: the inference-aware allocation")],
        check_args=["plan", "--b-crit", "1000", "--gpus", "16,32", "--micro-batch", "128", "--tokens", "2e10",
                    "--tokens-per-sec", "3000", "--price", "2.5", "--compute", "1e21", "--inference-tokens", "1e12",
                    "--link", "ib400", "--json"],
    ),
    Schema(
        "batchlaw.serve/1", "batchlaw plan serve ... --json",
        "The fewest replicas and the dynamic-batcher settings that meet a latency SLO; times in seconds.",
        [("schema", "`\"batchlaw.serve/1\"`"),
         ("max_batch", "recommended largest batch"), ("max_queue_delay_s", "recommended longest wait for a batch"),
         ("replicas", "recommended replicas sharing one queue"), ("n_requests", "requests simulated"),
         ("offered_rate_per_s", "arrival rate of the requests simulated"),
         ("capacity_per_s", "replicas x max_batch / S(max_batch): S = L(b) plus the serving overhead's busy time, "
                            "if any"), ("stable", "offered rate below capacity"),
         ("throughput_per_s", "requests served per second"), ("mean_latency_s", "mean latency"),
         ("p50_latency_s", "median latency"), ("p99_latency_s", "99th-percentile latency"),
         ("mean_wait_s", "mean time in the queue before the batch starts"), ("mean_batch", "mean batch formed"),
         ("delay_from", "when the max queue delay starts: `arrival` or `pickup` (Ray Serve)"),
         ("overhead", "the serving overhead used (`batch_s`, `per_request_s`, `fixed_s`, `jitter_s`, `busy_jitter_s`, "
                      "`timer_lateness_s`), or null for the bare L(b)"),
         ("notes", "remarks in words (a server whose capacity varied while it was profiled)"),
         ("utilisation", "busy replica-time over replicas x time"),
         ("slo", "`p50_s`, `p99_s` (null when not set)"), ("arrivals", "where the arrivals came from"),
         ("latency_source", "the profile or CSV of L(b)"), ("latency_curve", "`batch`, `latency_s` lists"),
         ("n_settings_simulated", "settings simulated by the search"),
         ("n_settings_stopped_early", "of those, settings stopped once certain to miss the SLO or the best p99"),
         ("cost_per_hour", "replicas x `--price`, or null")],
        check_args=["plan", "serve", "--latency-csv", "{examples}/serve_latency.csv", "--rate", "300",
                    "--requests", "3000", "--slo-p99-ms", "60", "--json"],
    ),
    Schema(
        "batchlaw.profile/1", "batchlaw profile ... --json (also written to --out)",
        "Step time and peak memory vs micro-batch, forward latency vs batch; batch sizes in examples. "
        "`batchlaw profile serve` adds a `serving` key: a `batchlaw.serving_overhead/1` block.",
        [("schema", "`\"batchlaw.profile/1\"`"), ("name", "the workload or MODULE:FACTORY profiled"),
         ("device", "`cpu` or `cuda:N`"), ("device_name", "the GPU's name, or `cpu`"), ("torch", "torch version"),
         ("threads", "torch CPU threads"), ("parameters", "trainable parameters"),
         ("tokens_per_example", "tokens per example, or null"), ("checkpointing", "activation checkpointing on"),
         ("checkpointed_blocks", "blocks checkpointed"),
         ("memory_kind", "`cuda_max_allocated` or `cpu_peak_rss` (null when unavailable)"),
         ("unit", "`examples`"),
         ("train", "one object per micro-batch: `micro_batch`, `status` (`ok` or `oom`), `step_time_s` (fastest), "
                   "`step_time_median_s`, `throughput_per_s`, `peak_memory_bytes`"),
         ("forward", "one object per batch: `batch`, `status`, `latency_s` (fastest), `latency_median_s`, "
                     "`peak_memory_bytes`"),
         ("max_micro_batch", "largest micro-batch that fitted"),
         ("stopped_by", "`oom`, `max_batch` or `time_budget`"),
         ("workload", "only for a built-in workload: its description")],
        check_args=["profile", "--workload", "linreg", "--device", "cpu", "--max-batch", "2", "--repeats", "1",
                    "--warmup", "0", "--out", "{tmp}/profile.json", "--json"],
    ),
    Schema(
        "batchlaw.serving_overhead/1", "batchlaw profile serve ... --json (also added to the profile as `serving`)",
        "What a real batching server adds to the forward latency L(b), measured over HTTP; seconds, requests.",
        [("schema", "`\"batchlaw.serving_overhead/1\"`"), ("url", "the server measured"),
         ("delay_from", "when its max queue delay starts: `pickup` (Ray Serve's `@serve.batch`) or `arrival`"),
         ("rows", "one object per batch size: `batch`, `throughput_per_s` (saturated, 3 x b in flight; median of "
                  "the rounds), `throughput_rounds_per_s`, `busy_s` (b / throughput), `forward_s` (L(b))"),
         ("n_lone", "lone requests timed"), ("lone_round_trip_s", "their `p50`, `p99`, `mean`"),
         ("probe_delay_s", "the max queue delay of the timer-lateness probe"),
         ("lone_with_delay_round_trip_s", "`p50`, `p99` of lone requests that waited that delay"),
         ("batch_s", "fitted busy time per batch o_0 (Theil-Sen line of busy_s - forward_s)"),
         ("per_request_s", "fitted busy time per request o_1"),
         ("fixed_s", "delay per request outside the batch: lone round trip - S(1)"),
         ("jitter_s", "101 percentiles of the delay jitter (the lone round trips' spread the busy time does not "
                      "explain), or null"),
         ("busy_jitter_s", "101 percentiles of the busy time per batch about its mean (completion gaps at max "
                           "batch 1, saturated), or null"),
         ("timer_lateness_s", "how late a batch that waits for its max queue delay starts"),
         ("fit_rms_s", "rms residual of the line"),
         ("throughput_variation", "largest max/min - 1 of a size's throughput over the rounds: above 0.2 the "
                                  "capacity moved while measured, and `plan serve` says so"),
         ("notes", "terms clipped at 0 and a varying capacity, in words")],
    ),
    Schema(
        "batchlaw.allreduce/1", "batchlaw profile allreduce ... --json",
        "Measured all-reduce times and the ring model fitted to them.",
        [("schema", "`\"batchlaw.allreduce/1\"`"), ("backend", "`gloo` or `nccl`"),
         ("fitted_link", "`name`, `bus_bandwidth_bytes_per_s`, `latency_s`, `description`"),
         ("rows", "one object per (size, ranks): `n_bytes`, `world`, `seconds`, `backend`, `stat`, `model_s`, "
                  "`model_over_measured`")],
        check_args=["profile", "allreduce", "--world-sizes", "2", "--sizes-mb", "1,8", "--repeats", "2", "--json"],
    ),
    Schema(
        "batchlaw.fit.cbs/2", "batchlaw fit cbs CSV ... --json",
        "Steps-vs-batch fits, one per group of the CSV (a sweep's trials.csv is read as it is, as the sweep's "
        "analysis reads its trials).",
        [("schema", "`batchlaw.fit.cbs/2` (`/1` had `rows_ignored` and dropped unreached seeds)"),
         ("groups", "one object per group: `group`, `n_points` (measured points fitted), `rows_not_reached` (rows "
                    "that did not reach the target), `not_reached_batches` (batch sizes where no row did), "
                    "`left_out` (batch sizes censored with no known bound, not fitted), `notes`, `points` (`batch`, "
                    "`steps` (null when censored), `censored`, `steps_lower_bound`, `seeds`, `n_censored`, and "
                    "`best_lr` with a learning-rate column), then either the fit (`s_min`, `e_min`, `b_crit`, `cbs` "
                    "and their `*_ci`, `reference_batch`, `unit`, `lower_bounds`: [batch, steps] of each point "
                    "fitted as a lower bound) or `error` (why this group has no fit)")],
        check_args=["fit", "cbs", "{tmp}/steps.csv", "--batch-col", "batch", "--steps-col", "steps",
                    "--bootstrap", "100", "--json"],
    ),
    Schema(
        "fit chinchilla", "batchlaw fit chinchilla CSV ... --json",
        "L(N, D) = E + A/N^alpha + B/D^beta and, on request, the allocation at a budget.",
        [("E", "irreducible loss"), ("A", "coefficient of the model-size term"), ("B", "coefficient of the data term"),
         ("alpha", "exponent of N"), ("beta", "exponent of D"), ("n_points", "runs fitted"),
         ("ci", "95% bootstrap interval [low, high] of each parameter, by name"),
         ("goodness", "`rmse_log`, `r2_log` (in log loss)"),
         ("extrapolation", "refit without the largest-compute runs: `held_out_points`, `held_out_fraction`, "
                           "`median_abs_rel_error`, `max_abs_rel_error`"),
         ("allocation", "only with `--compute`: `compute`, `params`, `tokens`, `tokens_per_param`, `loss`, `ci`"),
         ("inference_aware", "only with `--inference-tokens`: `params`, `tokens`, `tokens_per_param`, `loss`, "
                             "`inference_tokens`, `training_compute`, `total_compute`, `chinchilla_total_compute`")],
        versioned=False,
        check_args=["fit", "chinchilla", "{examples}/chinchilla_runs.csv", "--params-col", "params", "--tokens-col",
                    "tokens", "--loss-col", "loss", "--compute", "5.88e23", "--inference-tokens", "1e13",
                    "--bootstrap", "100", "--json"],
    ),
    Schema(
        "batchlaw.fit.isoflop/1", "batchlaw fit isoflop CSV ... --json",
        "Approach 2 (a local parabola, or Porian et al.'s Akima spline, per isoFLOP profile) and Approach 3 "
        "(variable projection) on the same runs.",
        [("schema", "`batchlaw.fit.isoflop/1`"),
         ("method", "how each budget's optimum was found (`--method`): `parabola` or `akima`"),
         ("optima", "one object per budget fitted: `compute`, `params`, `tokens`, `loss`, `n_runs`, `n_used` (runs in "
                    "its parabola; sizes in its spline), `params_ci`; with `akima` also `log_params_se` (the standard "
                    "error of log N_opt that weights the power-law fit)"),
         ("skipped", "one object per budget skipped: `compute`, `reason`"),
         ("window", "runs on each side of a profile's minimum used by its parabola (null with `akima`)"),
         ("loss_noise", "the seed-to-seed standard deviation of the loss (`--loss-noise`), in loss units (null with "
                        "`parabola`)"),
         ("params_law", "N_opt = coef * C^exponent: `coef`, `exponent`, `ci`; with `akima` also `noise_ci`, the "
                        "interval from seed noise alone (the published one)"),
         ("tokens_law", "D_opt = coef * C^exponent: `coef`, `exponent`, `ci` (and `noise_ci` with `akima`)"),
         ("approach3", "L = E + A/N^alpha + B/D^beta by variable projection: `E`, `A`, `B`, `alpha`, `beta`, "
                       "`params_exponent`, `tokens_exponent`, `ci`, `n_points`, `rmse_log`, `method`; or `error`"),
         ("comparison", "`params_exponent` (`approach2`, `approach2_ci`, `approach3`, `approach3_ci`) and `budgets` "
                        "(`compute`, `approach2_params`, `approach3_params`, `ratio`); absent with `--no-approach3`")],
        check_args=["fit", "isoflop", "{examples}/isoflop_runs.csv", "--params-col", "params", "--tokens-col", "tokens",
                    "--budget-col", "budget", "--loss-col", "loss", "--bootstrap", "100", "--json"],
    ),
    Schema(
        "batchlaw.fit.hparams/1", "batchlaw fit hparams CSV ... --json",
        "Optimal learning rate and batch per (N, D), found without extrapolation, and their power laws.",
        [("schema", "`batchlaw.fit.hparams/1`"), ("method", "how each group's optimum was found (`--method`)"),
         ("lr_law", "lr_opt = coef * N^exp_params * D^exp_tokens: `coef`, `exp_params`, `exp_tokens`, `ci`, "
                    "`n_groups`, `goodness`"),
         ("batch_law", "B_opt = coef * D^exp_tokens: `coef`, `exp_tokens`, `ci`, `n_groups`, `goodness`"),
         ("lr_vs_compute", "lr_opt = coef * C^exp_compute"), ("batch_vs_compute", "B_opt = coef * C^exp_compute"),
         ("batch_unit", "`tokens` with `--seq-len`, else the unit of the batch column"),
         ("excluded", "`lr`, `batch`: the groups left out of those laws (optimum at the grid's edge)"),
         ("n_diverged", "diverged runs (empty, NaN, inf or 'diverged' loss) over all groups"),
         ("optima", "one object per (N, D): `params`, `tokens`, `lr`, `batch`, `loss`, `method` (`local`, `quadratic`, "
                    "`raw` or `global`), `raw`, `n_runs`, `n_diverged`, `edge`, `warnings`, and with "
                    "`--group-bootstrap` `lr_ci`, `batch_ci`")],
        check_args=["fit", "hparams", "{examples}/hparam_grid.csv", "--lr-col", "lr", "--batch-col", "batch_seqs",
                    "--loss-col", "loss", "--params-col", "params", "--tokens-col", "tokens", "--seq-len", "2048",
                    "--bootstrap", "100", "--json"],
    ),
    Schema(
        "fit powerlaw", "batchlaw fit powerlaw CSV ... --json",
        "y = coef * x1^a1 * x2^a2 ...",
        [("coef", "the coefficient"), ("exponents", "exponent of each input column, by column name"),
         ("n_points", "rows fitted"), ("ci", "95% bootstrap intervals (`coef`, `exp_<column>`)"),
         ("goodness", "`rmse_log`, `r2_log`")],
        versioned=False,
        check_args=["fit", "powerlaw", "{tmp}/cbs_law.csv", "--y-col", "cbs", "--x-col", "tokens", "--bootstrap", "100",
                    "--json"],
    ),
    Schema(
        "batchlaw.fit.curve/2", "batchlaw fit curve CSV ... --json",
        "Learning-curve extrapolation: L(t) = L_inf + a t^-b, or with `--lr-col` L = L0 + A S1^-alpha - C S2 "
        "(Tissue et al. 2024; then `L0`, `A`, `alpha`, `C` replace `L_inf`, `a`, `b`), or with `--law multipower` "
        "the multi-power law of Luo et al. 2025 (`L0`, `A`, `alpha`, `B`, `C`, `beta`, `gamma`). Version 2: the "
        "Tissue law is named `tissue` (was `schedule`); `runs` and the prediction's `run` and `warning` are new.",
        [("schema", "`batchlaw.fit.curve/2`"), ("law", "`power`, `tissue` or `multipower`"),
         ("L_inf", "the asymptote"), ("a", "the coefficient"), ("b", "the exponent"), ("n_points", "points fitted"),
         ("ci", "95% moving-block bootstrap intervals of the parameters"), ("goodness", "`rmse_log`, `r2_log`"),
         ("bootstrap_block", "block length (points) of the moving-block bootstrap"),
         ("warnings", "why the law may not describe the points (the loss rises over the fitted steps, or the power "
                      "law came out flat); empty when none"),
         ("runs", "with `--run-col`: the runs, in file order; else empty"),
         ("prediction", "only with `--predict-at`: `step`, `loss`, `interval` (95% predictive; `[null, null]` with "
                        "`--bootstrap 0`); `run` (with `--run-col`); `warning` when the Tissue law extrapolates its "
                        "annealing term"),
         ("backtest", "fit on the first half, predict the last point: `fraction`, `law`, `fit_points`, `final_step`, "
                      "`final_loss`, `predicted`, `interval`, `rel_error`, `inside` (null with `--bootstrap 0`); or "
                      "`error` (also for several runs)")],
        check_args=["fit", "curve", "{examples}/learning_curve.csv", "--step-col", "step", "--loss-col", "loss",
                    "--predict-at", "20000", "--bootstrap", "100", "--json"],
    ),
    Schema(
        "batchlaw.branch/1", "batchlaw branch --json",
        "The critical batch size measured by branching from checkpoints of one run (Merrill et al. 2025).",
        [("schema", "`\"batchlaw.branch/1\"`"),
         ("unit", "unit of the batch sizes (`examples`)"),
         ("config", "the trunk and branch settings: workload, base batch, factors k, branch budget, tolerance"),
         ("points", "one object per checkpoint: examples seen, the branches' losses per k (each with a `status`, "
                    "`ok` or `diverged`; a diverged loss is `null`), CBS(t) and whether it is a lower or upper "
                    "bound, `non_monotone` (a larger batch passed after a smaller one failed: noise), and "
                    "B_simple(t) from the monitor on the trunk with its interval"),
         ("trace", "the trunk's noise-scale trace between checkpoints (null when not measured)")],
    ),
    Schema(
        "batchlaw.schedule_compare/2", "batchlaw schedule compare --json",
        "Batch-size schedules trained to a held-out target and judged against the frontier of constant batches: "
        "Pareto gain, example overhead, loss at a common budget, steps, examples and wall-clock with intervals over "
        "seeds. Version 2 replaces version 1's `goal` (0.7x the steps at 1.1x the tokens of the small batch) with the "
        "Pareto gain against the frontier, and adds `lr_cap`, `frontier` and `budget`.",
        [("schema", "`\"batchlaw.schedule_compare/2\"`"),
         ("config", "the comparison's settings: workload, target loss, seeds, small and large batch, the frontier's "
                    "batches (`frontier_batches`), allowance, LR and its rule, `initial_loss` per seed"),
         ("workload", "the workload's description"),
         ("unit", "unit of the batch sizes (`examples`)"),
         ("lr_cap", "the cap on every run's learning rate: `lr` (null: none needed), `source` (`user`, `workload`: "
                    "`margin` x the workload's known `limit`, or `probe`), `limit`, `margin`, and the `probes` "
                    "(`batch`, `lr`, `loss`, `status`: ok, worse or diverged)"),
         ("frontier", "the constant batches: `statistic` (how the drawn frontier is made) and `points`, one per batch: "
                      "`batch`, `lr`, `reached`, `diverged`, `steps` and `examples` (mean, 95% `ci`, per-seed `values`), "
                      "`median_steps`, `median_examples` (null when censored), `on_frontier`, `runs` (every run, with "
                      "its status, curve and batch changes)"),
         ("schedules", "per schedule (the constant small and large batches too): `steps`, `examples`, `tokens`, "
                       "`wall_s` to the target and their ratios to the constant small batch (mean, `ci`, `values`); "
                       "`pareto_gain` (1 - steps / S_frontier(allowance x examples), per seed against that seed's "
                       "frontier) and `example_overhead` (examples / E_frontier(steps) - 1), each with `bound` "
                       "(null, `lower` or `upper`: outside the frontier's range only a bound is known, and then no "
                       "interval) and per-seed `bounds`; `loss_at_budget` and `loss_penalty` (minus the best constant "
                       "batch of the seed); `reached`, `diverged`, `runs`. A schedule that branches (the `controller`) "
                       "has its branches' examples, steps and seconds inside every figure above, and apart: "
                       "`branch_examples`, `branch_steps` and `branch_share` (branch examples over the run's examples), "
                       "and in each run `trunk_steps`, `trunk_examples`, `branch` and `controller` (its report: settings "
                       "and every decision with its evidence). When a CBS ramp ran, the output also holds "
                       "`cbs_measurement` (the branched measurement it used, and its cost)"),
         ("budget", "the common budget of examples where held-out losses are compared: `examples` (the fewest with which "
                    "any run reached the target), `tokens`, `frontier_loss` (the best constant batch's loss there, "
                    "per seed), `best_constant_batch`, `rule`"),
         ("goal", "the verdict: `rule`, `allowance`, `results` (per schedule: `pareto_gain`, `ci`, `bound`, `met` "
                  "(true, false or null: cannot tell), `why`, and version 1's `steps_ratio` and `examples_ratio`), "
                  "`met` (null when no schedule besides the constant batches ran), `reason`"),
         ("notes", "what to keep in mind when reading the numbers: diverged or censored constant batches, bounds, "
                   "the LR cap")],
    ),
]


def schemas_markdown() -> str:
    """The reference page's body: one section per schema with its key table."""
    out = []
    for s in SCHEMAS:
        out.append(f"## `{s.name}`\n")
        out.append(f"`{s.command}`: {s.summary}")
        if not s.versioned:
            out.append("\nThis output has no `schema` key yet: treat its layout as unversioned.")
        out.append("\n| key | what it holds |\n|---|---|")
        out.extend(f"| `{k}` | {v.replace('|', chr(92) + '|')} |" for k, v in s.fields)
        out.append("")
    return "\n".join(out)
