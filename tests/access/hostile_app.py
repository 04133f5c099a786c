"""A captured run whose names and values are hostile HTML (for the web UI's escaping test;
run as a script with FLOWCEPT_RUN_DIR set)."""
from flowcept import Flowcept, FlowceptTask, flowcept_task

IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "<script>window.__xss=2</script>"
SVG = '<svg onload="window.__xss=3"></svg>'
BOLD = "<b>bold</b>"


@flowcept_task(activity_id=IMG, tags=[SCRIPT, BOLD])
def make(name):
    return f"{SVG}/{name}"


@flowcept_task(activity_id=SCRIPT)
def fail(path):
    raise ValueError(f"{IMG} failed on {path}")


if __name__ == "__main__":
    with Flowcept(workflow_name=SCRIPT, campaign_id=IMG):
        path = make(BOLD)
        try:
            fail(path)
        except ValueError:
            pass
        with FlowceptTask(activity_id=SVG, used={IMG: SCRIPT, "note": BOLD}, custom_metadata={BOLD: SVG}) as t:
            t.end(generated={"out": IMG})
