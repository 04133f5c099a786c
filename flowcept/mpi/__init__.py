"""``from flowcept.mpi import instrument``: the public name of MPI-aware
capture (implemented in flowcept.capture.mpi)."""
from flowcept.capture.mpi import Instrumentation, instrument

__all__ = ["Instrumentation", "instrument"]
