"""PyTorch capture with torch 2.13 CPU, Flowcept's way: a workflow per model,
its forwards and its children's forwards as Flowcept 1.0.3 records them."""
import pytest
from adapters_support import flowcept_yaml, read_back, stored_bodies

torch = pytest.importorskip("torch", reason="torch not installed: pip install 'flowcept[torch]'")

TENSOR = {"id", "is_sparse", "shape", "device", "nbytes", "numel", "density"}


def _net(decorate=True, **kw):
    from flowcept.instrumentation.flowcept_torch import flowcept_torch
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self, width=8, **kwargs):
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


def test_model_workflow_forwards_and_children(run_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", flowcept_yaml(   # Flowcept's defaults, epochs as tasks
        tmp_path / "settings.yaml", instrumentation={"enabled": True, "torch": {
            "what": "parent_and_children", "children_mode": "telemetry_and_tensor_inspection",
            "epoch_loop": "default", "batch_loop": "lightweight", "capture_epochs_at_every": 1,
            "register_workflow": True}}))
    from flowcept import Flowcept
    from flowcept.capture.task import FlowceptTask
    from flowcept.instrumentation.flowcept_torch import FlowceptEpochLoop
    from flowcept.query.tasks import read_workflows
    from flowcept.record.layout import format_task_id
    torch.manual_seed(0)
    with Flowcept(workflow_name="train-run") as f:
        with FlowceptTask(activity_id="setup") as setup:
            model = _net(get_profile=True, custom_metadata={"exp": "t1"})
        plain = _net(decorate=False)
        plain.load_state_dict(model.state_dict())
        xs = [torch.randn(5, 4) for _ in range(2)]
        for epoch in FlowceptEpochLoop(range(2), model):
            for x in xs:
                assert torch.equal(model(x), plain(x))     # results unchanged
        with pytest.raises(ValueError, match="want 4 features"):
            model(torch.randn(2, 3))
        run_wf, campaign = Flowcept.current_workflow_id, Flowcept.campaign_id
        setup_id = format_task_id(f.session.workflow_id, setup.task_id)
    read_back(run_dir)
    wfs = read_workflows(run_dir)
    (mwf,) = [w for w in wfs.values() if w.get("name") == "Net"]
    assert mwf["workflow_id"] == model.workflow_id and mwf["campaign_id"] == campaign
    assert mwf["parent_workflow_id"] == run_wf
    assert mwf["used"] == {"capture_at_every": 1}
    meta = mwf["custom_metadata"]
    assert meta["exp"] == "t1" and meta["workflow_type"] == "TorchModule"
    prof = meta["model_profile"]
    assert prof["params"] == 4 * 8 + 8 + 8 * 2 + 2 and prof["max_width"] == 8 and prof["n_modules"] == 4
    assert prof["model_repr"].startswith("Net(")
    model_wf = next(k for k, w in wfs.items() if w.get("name") == "Net")
    recs = [r for r in stored_bodies(run_dir) if f"{r['workflow']:016x}" == model_wf]
    fwd = [r for r in recs if r["activity"] == "Net"]
    kids = [r for r in recs if r["body"].get("subtype") == "child_forward"]
    assert len(fwd) == 5 and len(kids) == 3 * 4               # the failed forward ran no child
    ok = [r for r in fwd if r["status"] == "FINISHED"]
    for i, r in enumerate(ok):
        b = r["body"]
        assert b["subtype"] == "parent_forward" and b["custom_metadata"] == {"is_training": True}
        if i < 2:   # the first epoch: tensors described
            assert set(b["used"]["tensor"]) == TENSOR and b["used"]["tensor"]["shape"] == [5, 4]
            assert b["generated"]["tensor"]["shape"] == [5, 2]
            assert b["used"]["tensor"]["numel"] == 20 and b["used"]["tensor"]["device"] == "cpu"
        else:
            assert b["used"] == {} and "generated" not in b
        assert "telemetry_at_end" not in b                     # telemetry is off by default
    # the forwards of the model hang under the task that built it (no epoch task id yet)
    # a forward's parent is its epoch's task (Flowcept's new_epoch), in the run's workflow
    iters = sorted((r for r in stored_bodies(run_dir) if r["activity"] == "epochs_loop_iteration"),
                   key=lambda r: r["start_ns"])
    assert len(iters) == 2
    iter_ids = [format_task_id(r["workflow"], r["task"]) for r in iters]
    assert [r["body"]["parent_task_id"] for r in ok] == [iter_ids[0]] * 2 + [iter_ids[1]] * 2
    assert model.parent_task_id == iter_ids[1] != setup_id
    (bad,) = [r for r in fwd if r["status"] == "ERROR"]
    assert "want 4 features" in bad["body"]["error"]
    for i, r in enumerate(ok):   # children: Linear, ReLU, Linear under each forward
        mine = [k for k in kids if k["parent"] == r["task"]]
        assert [k["activity"] for k in sorted(mine, key=lambda k: k["start_ns"])] == ["Linear", "ReLU", "Linear"]
        first = sorted(mine, key=lambda k: k["start_ns"])[0]["body"]
        if i < 2:
            assert first["used"]["in_features"] == 4 and first["used"]["out_features"] == 8
            assert first["used"]["first_level_child"] is True and first["used"]["training"] is True
            assert first["generated"]["tensor"]["shape"] == [5, 8]
        else:   # after the first epoch: telemetry only (none configured here)
            assert first == {"subtype": "child_forward"}


def test_settings_parent_only_telemetry_and_sampling(run_dir, tmp_path, monkeypatch):
    pytest.importorskip("psutil")
    monkeypatch.setenv("FLOWCEPT_SETTINGS_PATH", flowcept_yaml(
        tmp_path / "settings.yaml",
        instrumentation={"enabled": True, "torch": {"what": "parent_only", "capture_epochs_at_every": 1,
                                                    "register_workflow": True}},
        telemetry_capture={"cpu": True, "mem": True}))
    from flowcept import Flowcept
    with Flowcept(workflow_name="t"):
        m = _net(capture_at_every=3)
        off = _net(capture_enabled=False)
        x = torch.randn(1, 4)
        for _ in range(7):
            m(x)
            off(x)
    read_back(run_dir)
    recs = stored_bodies(run_dir)
    fwd = [r for r in recs if r["activity"] == "Net"]
    assert len(fwd) == 3                                     # forwards 0, 3 and 6; none of `off`
    assert not [r for r in recs if r["body"].get("subtype") == "child_forward"]
    for r in fwd:
        assert set(r["body"]["telemetry_at_end"]) == {"cpu", "memory"}
    from flowcept.query.tasks import read_workflows
    assert sum(w.get("name") == "Net" for w in read_workflows(run_dir).values()) == 1


def test_module_without_kwargs_and_flowcept_import_path(run_dir):
    from flowcept import flowcept_torch as top
    from flowcept.instrumentation.flowcept_torch import flowcept_torch, get_torch_model_profile

    assert top is flowcept_torch

    @flowcept_torch
    class Tiny(torch.nn.Module):
        def __init__(self):   # takes none of our keywords: it never sees them
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x)

    t = Tiny(get_profile=True)
    assert t(torch.ones(1, 2)).shape == (1, 2)
    assert get_torch_model_profile(t)["params"] == 6
