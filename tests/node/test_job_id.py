"""job_id_of (Python) and fc_job_id_of (C) give the same id for every name:
numeric only for ASCII digits below 2**63."""
from hypothesis import given, settings, strategies as hs

from flowcept.native import lib
from flowcept.record.job import job_id_of, name_bytes


def c_id(name: str) -> int:
    return lib.fc_job_id_of(name_bytes(name))


def test_non_ascii_digits_hash_like_c():
    for name in ("١٢٣", "１２３", "²", "123", "0", "9223372036854775807", "9223372036854775808",
                 "12a", "local-20261201-1-ab", "-1", " 1"):
        assert job_id_of(name) == c_id(name), name
    assert job_id_of("123") == 123
    assert job_id_of("١٢٣") >> 63 == 1              # hashed, not 123
    assert job_id_of("9223372036854775808") >> 63 == 1


def test_names_from_the_environment_with_undecodable_bytes():
    name = b"job-\xff\xfe".decode("utf-8", "surrogateescape")
    assert job_id_of(name) == lib.fc_job_id_of(b"job-\xff\xfe")
    assert isinstance(job_id_of("\ud800x"), int)     # a lone surrogate: an id, no exception


@settings(max_examples=300, deadline=None)
@given(hs.one_of(hs.text(hs.characters(blacklist_characters="\x00"), max_size=30),
                 hs.integers(0, 2 ** 64).map(str),
                 hs.text(hs.characters(whitelist_categories=("Nd",)), min_size=1, max_size=8)))
def test_python_and_c_agree(name):
    assert job_id_of(name) == c_id(name)


def test_job_names_that_cannot_name_a_directory_are_refused_with_the_fix(run_dir):
    import subprocess
    import sys

    import pytest

    from flowcept.config import load_config
    from flowcept.errors import ConfigError
    from flowcept.record import job as jobs
    cfg = load_config()
    for bad in ("", ".", "..", "../escape", "a/b", "x\0y", "n" * 300):
        with pytest.raises(ConfigError, match="job_id"):
            jobs.ring_dir(cfg, bad)
        with pytest.raises(ConfigError):
            jobs.job_info(cfg, bad)
    assert jobs.ring_dir(cfg, "1234_5+0").endswith("/1234_5+0")
    r = subprocess.run([sys.executable, "-m", "flowcept", "recover", "../escape"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot name a directory" in r.stderr
    assert "Traceback" not in r.stderr
