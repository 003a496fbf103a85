from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent

# The `fast` subset (`make test-fast`): every doctest, and every test not marked `slow` except the
# ones below, left out for their cost (each took over a second of CPU on a loaded 2-core machine:
# real training, sweeps, subprocesses, torchrun, the docs site). Parametrized tests by their base
# name (setup counts: a test whose fixture starts processes is listed). A new test is fast unless it is listed here or marked `slow`: list one that trains, spawns
# processes or takes over a second. tests/test_fast_subset.py checks that each name here still
# exists and that the subset still reaches every module of src/batchlaw. ALL: the whole file.
ALL = frozenset({"*"})
NOT_FAST = {
    "test_branch.py": {"test_branched_measurement_recovers_the_nqm_cbs", "test_pool_workers_die_with_their_parent",
                       "test_resumes_after_sigkill_without_repeating_finished_branches"},
    "test_branch_workload.py": {"test_pool_and_in_process_give_the_same_branches"},
    "test_censored.py": {"test_a_lower_bound_pulls_the_law_up_only_when_it_would_pass_below",
                         "test_report_plot_and_table_mark_the_lower_bound"},
    "test_cli.py": {"test_a_closed_pipe_ends_quietly_like_a_unix_tool", "test_demo_runs_the_whole_story",
                    "test_fit_cbs_json_schema_and_groups", "test_help_on_every_command", "test_measure_table",
                    "test_sweep_then_report"},
    "test_cli_laws.py": {"test_csv_with_empty_trailing_fields_is_read",
                         "test_fit_curve_schedule_aware_with_the_planned_schedule", "test_fit_hparams_json"},
    "test_cli_fuzz.py": {"test_fit_curve_any_option_value_answers_with_finite_non_negative_quantities"},
    "test_controller_ddp.py": {"test_every_rank_takes_the_same_decisions_and_branches_on_averaged_gradients"},
    "test_custom_workloads.py": {"test_cli_sweep_resumes_after_sigkill_and_reports",
                                 "test_ray_workers_import_by_reference_or_say_how_to_ship_it",
                                 "test_sweep_in_worker_processes_matches_in_process"},
    "test_distributed.py": ALL,  # its module fixtures run torchrun worlds of 2 and 4 ranks
    "test_docs_build.py": {"test_mkdocs_build_strict", "test_no_raw_rest_roles_or_directives_in_the_site",
                           "test_every_public_name_is_documented_once_lazy_re_exports_included",
                           "test_tables_keep_code_names_whole", "test_the_site_renders_with_the_theme_in_chromium"},
    "test_docs_examples.py": {"test_doc_page_code_blocks_run_and_print_their_output_blocks"},
    "test_docs_reference.py": {"test_documented_json_keys_are_the_printed_keys"},
    "test_estimators.py": {"test_interval_coverage_on_exact_linear_regression_gradients"},
    "test_fit_curves_schedule.py": {
        "test_several_runs_are_named_and_refused_clearly",
        "test_a_rising_curve_is_flagged_and_a_falling_one_is_not", "test_cli_multipower_on_the_cooldown_example",
        "test_multipower_flags_a_cooldown_whose_drop_has_not_saturated",
        "test_multipower_predicts_a_wsd_decay_from_its_stable_phase_and_a_short_cooldown",
        "test_tissue_interval_is_honest_on_cosine_from_the_first_half",
        "test_tissue_law_flags_its_annealing_extrapolation"},
    "test_fit_laws.py": {"test_chinchilla_recovers_known_parameters_within_intervals",
                         "test_learning_curve_fit_prediction_and_backtest"},
    "test_fit_realistic.py": {
        "test_curve_interval_is_honest_on_autocorrelated_constant_lr_curves",
        "test_hparam_laws_recover_the_truth_on_lopsided_grids",
        "test_isoflop_approaches_2_and_3_recover_the_truth_on_lopsided_profiles",
        "test_leaving_out_the_warmup_removes_the_power_laws_first_quarter_bias",
        "test_schedule_law_recovers_tissue_parameters_and_predicts_the_decay"},
    "test_fit_steps.py": {"test_agrees_with_scipy_curve_fit_on_clean_data",
                          "test_intervals_cover_true_parameters_in_most_seeds", "test_robust_to_one_outlier",
                          "test_units_scale_the_right_parameters"},
    "test_integrations_hf.py": {"test_accelerate_pattern_matches_plain_loop",
                                "test_activation_checkpointing_measures_the_same", "test_example_script_runs",
                                "test_missing_transformers_names_the_extra",
                                "test_trainer_estimate_matches_plain_loop_and_analytic_value"},
    "test_integrations_hf_ddp.py": {"test_trainer_under_ddp_matches_a_single_process"},
    "test_integrations_lightning.py": {
        "test_csv_tensorboard_and_wandb_loggers_receive_the_metrics",
        "test_estimate_matches_plain_loop_and_analytic_value_with_clipping",
        "test_missing_lightning_names_the_extra",
        "test_short_last_step_of_each_epoch_keeps_absolute_values_right"},
    "test_integrations_lightning_ddp.py": {
        "test_ddp_strategy_measures_like_one_process_and_leaves_training_unchanged"},
    "test_monitor.py": {"test_linreg_matches_analytic_value_and_interval_covers_it",
                        "test_real_mlp_matches_brute_force_per_example_gradients",
                        "test_every_auto_picks_a_larger_cadence_when_its_hooks_are_slow",
                        "test_every_auto_keeps_measuring_every_step_when_cheap"},
    "test_nqm.py": {"test_exact_law_matches_its_limits", "test_sweep_recovers_the_exact_critical_batch_size",
                    "test_train_target_sweep_recovers_the_exact_critical_batch_size"},
    "test_plan.py": {"test_b_crit_interval_from_a_store", "test_b_crit_store_with_two_sweeps_needs_sweep",
                     "test_fit_and_plan_import_without_torch"},
    "test_profile.py": {"test_checkpointing_keeps_gradients_and_saves_memory",
                        "test_out_of_memory_under_rlimit_as_returns_the_whole_curve"},
    "test_report.py": {"test_every_rendered_field_is_escaped",
                       "test_no_empty_plots_and_no_empty_legends_when_nothing_reached",
                       "test_report_links_trials_csv_and_says_every_step",
                       "test_report_names_the_outliers_it_excluded",
                       "test_sweeps_whose_names_slug_alike_keep_their_own_plots"},
    "test_schedule.py": {"test_noise_ramp_grows_in_a_real_loop_and_resumes_bit_for_bit"},
    "test_serving_measure.py": {"test_measure_overhead_finds_a_batchers_known_busy_time"},
    "test_sweep.py": {"test_csv_export", "test_linreg_b_crit_and_b_simple_agree_within_factor_2",
                      "test_progress_knows_its_total_ends_at_100_and_writes_lines_off_a_terminal",
                      "test_ray_executor_gives_the_same_results_as_local",
                      "test_resume_after_kill_or_ctrl_c_loses_no_finished_trial",
                      "test_same_command_twice_runs_no_trial_twice"},
}


def is_fast(item) -> bool:
    """Whether a collected test belongs to the `fast` subset (see NOT_FAST)."""
    if item.get_closest_marker("slow"):
        return False
    path = Path(str(item.path))
    if not path.is_relative_to(TESTS):
        return True  # a doctest of src/batchlaw
    base = getattr(item, "originalname", None) or item.name.split("[")[0]
    left_out = NOT_FAST.get(path.name, ())
    return left_out is not ALL and base not in left_out


def pytest_collection_modifyitems(config, items):
    for item in items:
        if is_fast(item):
            item.add_marker(pytest.mark.fast)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
