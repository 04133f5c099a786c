"""A Flowcept-style convergence loop: iterate until the residual is small
(no length known in advance: an iterator), each step an instrumented task
inside its iteration, then the history read back with Flowcept.db."""
import itertools

from flowcept import Flowcept, FlowceptLoop, flowcept_task


@flowcept_task(output_names=["x", "residual"])
def newton_step(x, target):
    nxt = 0.5 * (x + target / x)
    return nxt, abs(nxt * nxt - target)


with Flowcept(workflow_name="sqrt_convergence", workflow_args={"target": 2.0}):
    x, tol = 1.0, 1e-10
    loop = FlowceptLoop(itertools.count(), loop_name="newton", item_name="step")
    for step in loop:
        x, residual = newton_step(x, 2.0)
        loop.end_iter({"residual": residual})
        if residual < tol:
            break

wf = Flowcept.db.get_workflow_object(Flowcept.current_workflow_id)
assert wf.name == "sqrt_convergence" and wf.used == {"target": 2.0}
steps = Flowcept.db.task_query(filter={"workflow_id": Flowcept.current_workflow_id,
                                       "activity_id": "newton_step"},
                               sort=[("started_at", Flowcept.db.ASCENDING)])
iterations = Flowcept.db.task_query(filter={"activity_id": "newton_iteration"})
assert len(steps) == len(iterations) >= 4
assert steps[-1]["generated"]["residual"] < 1e-10
assert abs(steps[-1]["generated"]["x"] - 2 ** 0.5) < 1e-9
by_id = {t["task_id"]: t for t in iterations}
assert all(by_id[s["parent_task_id"]]["activity_id"] == "newton_iteration" for s in steps)
print(f"converged in {len(steps)} steps: x={x}")
