#%Module1.0
## Environment Modules (Tcl) module for flowcept (hand-written template).
## The Spack recipe renders it at install time into <prefix>/share/flowcept/modules/flowcept.tcl
## with the placeholders below filled in (the prefix, and the package's python_platlib: the
## site-packages directory as the Python in the spec lays it out); copy that file to
## <modulepath>/flowcept/<version>.  Without Spack, replace both placeholders yourself (see
## spack/README.md).

set prefix  {@FLOWCEPT_PREFIX@}
set platlib {@FLOWCEPT_PLATLIB@}

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
prepend-path PYTHONPATH      $platlib
prepend-path CPATH           $prefix/include
prepend-path LIBRARY_PATH    $prefix/lib
prepend-path LD_LIBRARY_PATH $prefix/lib
