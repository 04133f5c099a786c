"""Flowcept's first example, as a Flowcept user writes it: two decorated
functions, a workflow with no database or services, then the captured
messages read back.  Runs unchanged against this package."""
import json

from flowcept import Flowcept, flowcept_task


@flowcept_task(output_names="o1")
def sum_one(i1):
    return i1 + 1


@flowcept_task(output_names="o2")
def mult_two(o1):
    return o1 * 2


def main():
    n = 3
    with Flowcept(start_persistence=False, save_workflow=False, check_safe_stops=False):
        o1 = sum_one(n)
        o2 = mult_two(o1)
    print("Final output", o2)
    return o2


if __name__ == "__main__":
    assert main() == 8
    messages = Flowcept.read_messages_file()
    assert len(messages) == 2, messages
    by_activity = {m["activity_id"]: m for m in messages}
    assert by_activity["sum_one"]["used"] == {"i1": 3}
    assert by_activity["sum_one"]["generated"] == {"o1": 4}
    assert by_activity["mult_two"]["generated"] == {"o2": 8}
    assert all(m["status"] == "FINISHED" and m["type"] == "task" for m in messages)
    assert Flowcept.read_buffer_file() == messages
    print(json.dumps(messages, indent=2))
