#%Module1.0
## Environment Modules (Tcl) module for flowcept (hand-written template).
## Install as <modulepath>/flowcept/<version> and set `prefix` (and `pyver`) below, e.g.
## prefix = the output of `spack location -i py-flowcept`.

set prefix /opt/flowcept/0.1.0
set pyver  3.11

module-whatis "flowcept: HPC-native, MPI-aware workflow provenance (Python + C)"

proc ModulesHelp { } {
    puts stderr "flowcept: workflow provenance for MPI codes."
    puts stderr "  FLOWCEPT_SHM_DIR  node-local shared-memory directory for per-rank rings (/dev/shm)"
    puts stderr "  FLOWCEPT_RUN_DIR  stores, spools and archives (\$SCRATCH/flowcept-runs, else ./flowcept-runs)"
}

# Only known FLOWCEPT_* keys may be set: the runtime rejects unknown FLOWCEPT_ variables.
setenv FLOWCEPT_HOME    $prefix
setenv FLOWCEPT_SHM_DIR /dev/shm
if { [info exists env(SCRATCH)] && $env(SCRATCH) ne "" } {
    setenv FLOWCEPT_RUN_DIR $env(SCRATCH)/flowcept-runs
} else {
    setenv FLOWCEPT_RUN_DIR ./flowcept-runs
}

prepend-path PATH            $prefix/bin
prepend-path PYTHONPATH      $prefix/lib/python$pyver/site-packages
prepend-path CPATH           $prefix/include
prepend-path LIBRARY_PATH    $prefix/lib
prepend-path LD_LIBRARY_PATH $prefix/lib
