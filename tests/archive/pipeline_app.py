"""A small captured program with tags, a failure and data passed between tasks
(used by the archive tests; run as a script with FLOWCEPT_RUN_DIR set)."""
from flowcept import Flowcept, FlowceptTask, flowcept_task


@flowcept_task(tags=["io", "input"])
def make(name):
    return f"/data/{name}.csv"


@flowcept_task(tags=["prep"])
def clean(path):
    return path + ".clean"


# defaults are recorded in used (Flowcept's rule): text no task generates, so that
# data lineage (equal values) finds no producer for them
@flowcept_task(tags=["ml"], custom_metadata={"gpu": False})
def train(path, optimizer="sgd"):
    return f"model-{path.rsplit('/', 1)[-1]}"


@flowcept_task(tags=["ml", "eval"])
def evaluate(model, metric="auc"):
    if model.endswith("b.csv.clean"):
        raise ValueError(f"cannot evaluate {model}")
    return 0.9


@flowcept_task
def pipeline(name):
    model = train(clean(make(name)))
    try:
        return evaluate(model)
    except ValueError:
        return None


if __name__ == "__main__":
    with Flowcept(workflow_name="pipeline", campaign_id="tests"):
        for name in ("a", "b", "c"):
            pipeline(name)
        with FlowceptTask(activity_id="report", used={"score_of": "model-a.csv.clean"}) as t:
            t.end(generated={"ok": True})
