"""fc_job_id_of (csrc/jobid.c, its own BLAKE2b) computes the same job ids as
Python's job_id_of, for random names and the numeric rule's edges."""
import importlib

import pytest
from hypothesis import assume, given, settings, strategies as st

lib = pytest.importorskip("flowcept._flowcept_c").lib


def _job_id_of():
    for mod in ("flowcept.record.job", "flowcept.node.jobs", "flowcept.jobs"):
        try:
            return importlib.import_module(mod).job_id_of
        except (ImportError, AttributeError):
            continue
    pytest.skip("no job_id_of in flowcept")


job_id_of = _job_id_of()

# C names are NUL-terminated bytes; Python's isdigit() also takes non-ASCII
# digits (and int() of some of them fails), which C does not treat as numbers.
NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                max_size=300).filter(lambda s: not any(c.isdigit() and not c.isascii() for c in s))


@settings(max_examples=300, deadline=None)
@given(NAMES)
def test_random_names(name):
    assert lib.fc_job_id_of(name.encode()) == job_id_of(name)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**25), st.integers(min_value=0, max_value=3))
def test_numeric_names(n, zeros):
    name = "0" * zeros + str(n)
    assume(name)
    assert lib.fc_job_id_of(name.encode()) == job_id_of(name)


@pytest.mark.parametrize("name", ["", "0", "9223372036854775807", "9223372036854775808", "+5", " 5",
                                  "5 ", "-1", "local-123", "x" * 127, "x" * 128, "x" * 129, "é" * 200])
def test_edges(name):
    assert lib.fc_job_id_of(name.encode()) == job_id_of(name)
