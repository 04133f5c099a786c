"""The progress bar of long offline work: silent off a terminal and for short
work, a bar with counts once the work runs past its delay."""
import io
import sys

from flowcept.progress import Progress


def test_progress_shows_only_when_enabled_and_past_the_delay(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    quiet = Progress(10, enabled=True, label="x", delay_s=3600)
    quiet.update(5, 1000, force=True)
    quiet.close()
    assert err.getvalue() == ""
    off = Progress(10, enabled=False, delay_s=0)
    off.update(5, 1000, force=True)
    off.close()
    assert err.getvalue() == ""
    bar = Progress(4, enabled=True, label="replaying", delay_s=0)
    bar.update(2, 2_000_000, force=True)
    assert "replaying [" in err.getvalue() and "50.0%" in err.getvalue()
    assert "2,000,000 records" in err.getvalue()
    bar.close()
    assert err.getvalue().endswith("\n")
    counted = Progress(None, enabled=True, label="recovering", delay_s=0)
    counted.update(0, 7, force=True)
    assert "recovering  7 records" in err.getvalue()
