"""Flowcept's simple instrumented example: a default workflow, two tasks,
queried through Flowcept.db, then a provenance card from the buffer."""
import os

from flowcept import Flowcept, flowcept_task


@flowcept_task
def sum_one(n):
    return n + 1


@flowcept_task
def mult_two(n):
    return n * 2


with Flowcept():
    n = 3
    o1 = sum_one(n)
    o2 = mult_two(o1)
    print(o2)

docs = Flowcept.db.get_tasks_from_current_workflow()
print(len(docs))
print(f"Workflow_id={Flowcept.current_workflow_id}")
assert len(docs) == 2
assert [d["activity_id"] for d in docs] == ["sum_one", "mult_two"]
assert docs[0]["generated"] == {"arg_0": 4} and docs[1]["used"] == {"n": 4}
assert all(d["workflow_id"] == Flowcept.current_workflow_id for d in docs)
assert all(d["campaign_id"] == Flowcept.campaign_id for d in docs)

card = "PROVENANCE_CARD.md"
buffer = Flowcept.read_buffer_file()
assert len(buffer) == 3 and buffer[0]["type"] == "workflow"   # the workflow message first
stats = Flowcept.generate_report(records=buffer, output_path=card)
assert stats["tasks"] == 2 and os.path.exists(card)
print(f"{card} generated!")
