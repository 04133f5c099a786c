"""Flowcept's ``flowcept.instrumentation`` import paths: ``flowcept_task``
(decorators), ``task_capture`` (FlowceptTask), ``flowcept_loop``
(FlowceptLoop, FlowceptLightweightLoop), ``flowcept_decorator`` (the
``@flowcept`` workflow decorator).  The classes are the engine's
(flowcept.capture.task); these modules only re-export them."""
