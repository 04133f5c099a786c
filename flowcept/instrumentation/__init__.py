"""Flowcept's ``flowcept.instrumentation`` import paths over our capture:
``flowcept_task`` (decorators), ``task_capture`` (FlowceptTask),
``flowcept_loop`` (FlowceptLoop, FlowceptLightweightLoop),
``flowcept_decorator`` (the ``@flowcept`` workflow decorator)."""
