"""The read loop the keeper and the bridge share: back-off, idle exit,
stop, and close whatever happens.  The stop event is replaced by one that
records the waits instead of sleeping."""
import signal

import pytest

from flowcept.errors import TransportUnavailable
from flowcept.keeper.loop import FIRST_BACKOFF_S, MAX_BACKOFF_S, SourceLoop


class RecordingStop:
    """threading.Event's interface; wait() records and returns at once."""

    def __init__(self):
        self.waits = []
        self._set = False

    def wait(self, timeout=None):
        self.waits.append(timeout)
        return self._set

    def set(self):
        self._set = True

    def is_set(self):
        return self._set


class ScriptedSource:
    """Answers each read with the next item of a script: a list of entries,
    or an exception to raise; stops the loop when the script runs out."""

    def __init__(self, script, loop):
        self.script, self.loop = list(script), loop

    def read(self, count, block):
        if not self.script:
            self.loop.stop()
            return []
        item = self.script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item


class Loop(SourceLoop):
    count, block_ms = 4, 100

    def __init__(self, script, results=(), read_ends_backoff=True):
        super().__init__()
        self._stop = RecordingStop()
        self.read_ends_backoff = read_ends_backoff
        self.script, self.results = script, list(results)
        self.handled, self.failed, self.rounds, self.closed = [], [], 0, 0

    def open(self):
        self.sources = [ScriptedSource(self.script, self)]

    def handle(self, src, entries):
        self.handled.append(entries)
        return self.results.pop(0) if self.results else True

    def read_failed(self, err, retry_in):
        self.failed.append(retry_in)

    def after_round(self):
        self.rounds += 1

    def close(self):
        self.closed += 1


DOWN = TransportUnavailable("down")


def test_read_failures_back_off_doubling_up_to_the_most():
    loop = Loop([DOWN] * 8 + [["e"]])
    assert loop.run() == 0
    want = [min(FIRST_BACKOFF_S * 2 ** i, MAX_BACKOFF_S) for i in range(8)]
    assert loop.failed == want and loop._stop.waits == want
    assert loop.handled == [["e"]] and loop.closed == 1
    assert loop.rounds == 10    # 8 refused reads, the entries, the read that stops it


def test_a_successful_read_ends_the_back_off_when_it_is_the_sources_alone():
    loop = Loop([DOWN, DOWN, [], DOWN])
    loop.run()
    assert loop.failed == [FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S, FIRST_BACKOFF_S]


def test_with_a_destination_only_a_handled_read_ends_the_back_off():
    loop = Loop([DOWN, DOWN, [], DOWN, ["a"], DOWN], read_ends_backoff=False)
    loop.run()
    assert loop.failed == [FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S, 4 * FIRST_BACKOFF_S,
                           FIRST_BACKOFF_S]


def test_a_failed_handle_backs_off_before_the_next_read():
    loop = Loop([["a"], ["b"], ["c"]], results=[False, False, True], read_ends_backoff=False)
    loop.run()
    assert loop.handled == [["a"], ["b"], ["c"]]
    assert loop._stop.waits == [FIRST_BACKOFF_S, 2 * FIRST_BACKOFF_S]


def test_idle_for_max_idle_s_returns():
    class Forever(Loop):
        def open(self):
            self.sources = [type("Empty", (), {"read": lambda self, c, b: []})()]
    loop = Forever([])
    assert loop.run(max_idle_s=0) == 0
    assert loop.closed == 1 and not loop.stopping


def test_close_runs_and_signals_come_back_when_open_fails():
    before = signal.getsignal(signal.SIGTERM)

    class Broken(Loop):
        def open(self):
            assert signal.getsignal(signal.SIGTERM) == self.stop
            raise OSError("no store")
    loop = Broken([])
    with pytest.raises(OSError):
        loop.run()
    assert loop.closed == 1 and signal.getsignal(signal.SIGTERM) is before


def test_several_sources_are_polled_and_an_empty_round_waits_a_share_of_block_ms():
    blocks = []

    class Two(Loop):
        def open(self):
            one = ScriptedSource([["a"], []], self)
            two = ScriptedSource([[], [], []], self)
            for s in (one, two):
                read = s.read
                s.read = lambda c, b, read=read: (blocks.append(b), read(c, b))[1]
            self.sources = [one, two]
    loop = Two([])
    loop.run()
    assert set(blocks) == {None} and loop.handled == [["a"]]
    # the empty round, and the round cut short by stop() (a set Event does not wait)
    assert loop._stop.waits == [Loop.block_ms / 1000 / 2] * 2


def test_the_keeper_ends_its_back_off_on_a_read_the_bridge_on_a_forward():
    from flowcept.keeper.bridge import Bridge
    from flowcept.keeper.service import Keeper
    assert Keeper.read_ends_backoff and not Bridge.read_ends_backoff
