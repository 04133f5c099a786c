"""PyTorch instrumentation with torch 2.13 CPU."""
import pytest
from adapters_support import read_back

torch = pytest.importorskip("torch", reason="torch not installed: pip install 'flowcept[torch]'")


def _net(decorate, **kw):
    from flowcept.adapters.torch import flowcept_torch
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.fc1 = nn.Linear(4, width)
            self.act = nn.ReLU()
            self.fc2 = nn.Linear(width, 2)

        def forward(self, x):
            if x.shape[-1] != 4:
                raise ValueError("want 4 features")
            return self.fc2(self.act(self.fc1(x)))

    cls = flowcept_torch(Net) if decorate else Net
    return cls(**kw)


def test_forwards_epochs_batches_children_and_model_entity(run_dir, session):
    from flowcept.adapters.torch import FlowceptEpochLoop
    torch.manual_seed(0)
    model = _net(True, capture_children=True, custom_metadata={"exp": "t1"})
    plain = _net(False)
    plain.load_state_dict(model.state_dict())
    xs = [torch.randn(5, 4) for _ in range(3)]
    for epoch in FlowceptEpochLoop(range(2), model):
        for x in xs:
            assert torch.equal(model(x), plain(x))     # results unchanged
    with pytest.raises(ValueError, match="want 4 features"):
        model(torch.randn(2, 3))
    tasks = read_back(run_dir)
    by_act = {}
    for t in tasks:
        by_act.setdefault(t["activity_id"], []).append(t)
    (ent,) = by_act["torch:model"]
    assert ent["generated"]["params"] == 4 * 8 + 8 + 8 * 2 + 2
    assert ent["generated"]["modules"] == {"": "Net", "fc1": "Linear", "act": "ReLU", "fc2": "Linear"}
    fwd = by_act["Net"]
    assert len(fwd) == 7
    ok = [f for f in fwd if f["status"] == "FINISHED"]
    assert [(f["used"]["epoch"], f["used"]["batch"]) for f in ok] == [(e, b) for e in (0, 1) for b in range(3)]
    f0 = ok[0]
    assert f0["used"]["tensors"] == [{"dtype": "torch.float32", "shape": [5, 4], "device": "cpu"}]
    assert f0["generated"]["tensor"]["shape"] == [5, 2]
    assert f0["custom_metadata"]["model_task_id"] == int(ent["task_id"].split("-")[1], 16)
    assert f0["custom_metadata"]["exp"] == "t1"
    iters = by_act["EpochLoop_iteration"]
    assert len(iters) == 2
    assert {f["parent_task_id"] for f in ok[:3]} == {iters[0]["task_id"]}
    assert {f["parent_task_id"] for f in ok[3:]} == {iters[1]["task_id"]}
    bad = [f for f in fwd if f["status"] == "ERROR"]
    assert len(bad) == 1 and "want 4 features" in bad[0]["error"]
    for path, n in (("fc1", 6), ("act", 6), ("fc2", 6)):
        kids = by_act[f"Net.{path}"]
        assert len(kids) == n
        assert {k["parent_task_id"] for k in kids} == {f["task_id"] for f in ok}
    assert by_act["Net.fc1"][0]["generated"]["tensor"]["shape"] == [5, 8]


def test_capture_at_every_disabled_and_telemetry(run_dir, session):
    pytest.importorskip("psutil")
    m = _net(True, capture_at_every=3, capture_telemetry=True)
    off = _net(True, capture_enabled=False)
    x = torch.randn(1, 4)
    for _ in range(7):
        m(x)
        off(x)
    tasks = read_back(run_dir)
    fwd = [t for t in tasks if t["activity_id"] == "Net"]
    assert [f["used"]["batch"] for f in fwd] == [0, 3, 6]
    for f in fwd:
        for when in ("telemetry_at_start", "telemetry_at_end"):
            snap = f["custom_metadata"][when]
            assert snap["process"]["rss"] > 0 and snap["memory"]["total"] > 0
    assert sum(t["activity_id"] == "torch:model" for t in tasks) == 1
