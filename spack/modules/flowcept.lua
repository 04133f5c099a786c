-- -*- lua -*-
-- Lmod module for flowcept (hand-written template).
-- The Spack recipe renders it at install time into <prefix>/share/flowcept/modules/flowcept.lua
-- with the placeholders below filled in (the prefix, and the package's python_platlib: the
-- site-packages directory as the Python in the spec lays it out, lib or lib64, site- or
-- dist-packages).  Copy that file to <modulepath>/flowcept/<version>.lua.  Without Spack, fill
-- them in yourself (see spack/README.md).
-- A Spack-generated module (`spack module lmod refresh py-flowcept`) sets the paths itself;
-- this template adds the runtime settings.

local prefix  = "@FLOWCEPT_PREFIX@"    -- the installation prefix
local platlib = "@FLOWCEPT_PLATLIB@"   -- its site-packages directory (python_platlib)

whatis("Name: flowcept")
whatis("Description: HPC-native, MPI-aware workflow provenance (Python + C)")
help([[
flowcept: workflow provenance for MPI codes.
  FLOWCEPT_SHM_DIR  node-local shared-memory directory for per-rank rings (/dev/shm)
  FLOWCEPT_RUN_DIR  where stores, spools and archives go ($SCRATCH/flowcept-runs, else
                    ./flowcept-runs relative to the job's working directory)
Override either after loading, e.g. `export FLOWCEPT_RUN_DIR=/path`.
]])

-- Only known FLOWCEPT_* keys may be set: the runtime rejects unknown FLOWCEPT_ variables.
setenv("FLOWCEPT_HOME", prefix)
setenv("FLOWCEPT_SHM_DIR", "/dev/shm")
local scratch = os.getenv("SCRATCH")
if scratch ~= nil and scratch ~= "" then
    setenv("FLOWCEPT_RUN_DIR", pathJoin(scratch, "flowcept-runs"))
else
    setenv("FLOWCEPT_RUN_DIR", "./flowcept-runs")
end

prepend_path("PATH", pathJoin(prefix, "bin"))
prepend_path("PYTHONPATH", platlib)
prepend_path("CPATH", pathJoin(prefix, "include"))
prepend_path("LIBRARY_PATH", pathJoin(prefix, "lib"))
prepend_path("LD_LIBRARY_PATH", pathJoin(prefix, "lib"))
