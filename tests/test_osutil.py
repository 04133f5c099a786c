"""The base helpers every layer shares."""
from flowcept.osutil import redact_url


def test_redact_url_hides_the_password_and_keeps_the_rest():
    assert redact_url("redis://:s3cret@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("rediss://user:s3cret@h:6380/2") == "rediss://user:***@h:6380/2"
    # a password without a user name, a query and a fragment (the MongoDB store's copy
    # of this function printed "None:***@" and dropped the fragment)
    assert redact_url("mongodb://:pw@h/db?tls=true#x") == "mongodb://:***@h/db?tls=true#x"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("http://[::1") == "<unparsable url>"
    assert "s3cret" not in redact_url("kafka://u:s3cret@[::1]:9092/t")
