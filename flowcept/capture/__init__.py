"""Capture: what a rank process runs to record provenance.

``task`` (``@flowcept_task``, ``FlowceptTask``, ``FlowceptLoop``), ``workflow``
(``Flowcept``), ``session`` (a process's ring and ids), ``mpi`` (collective
start-up under mpi4py).  Capture writes records into the process's ring and
never publishes them itself: when the process leads, it asks the registry
for a leader (group ``flowcept.leaders``), so this layer imports nothing
from the node, transport or store layers.
"""
