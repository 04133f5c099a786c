"""Flowcept's loop example: a FlowceptLoop over epochs, one task for the
loop and one per iteration, queried by workflow id."""
from time import sleep

from flowcept import Flowcept, FlowceptLoop

epochs = range(1, 3)
with Flowcept():
    loop = FlowceptLoop(items=epochs, loop_name="epochs_loop", item_name="epoch")
    for epoch in loop:
        sleep(0.05)
        loop.end_iter({"loss": 0.1 * epoch})

docs = Flowcept.db.query(filter={"workflow_id": Flowcept.current_workflow_id})
print(len(docs))
assert len(docs) == 3  # the loop task and its two iterations
whole = [d for d in docs if d["subtype"] == "whole_loop"]
iterations = [d for d in docs if d["subtype"] == "iteration"]
assert len(whole) == 1 and whole[0]["activity_id"] == "epochs_loop"
assert [d["used"]["i"] for d in iterations] == [0, 1]
assert [d["used"]["epoch"] for d in iterations] == [1, 2]
assert all(d["parent_task_id"] == whole[0]["task_id"] for d in iterations)
assert iterations[1]["generated"] == {"loss": 0.2}
