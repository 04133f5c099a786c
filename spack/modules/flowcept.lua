-- -*- lua -*-
-- Lmod module for flowcept (hand-written template).
-- Install as <modulepath>/flowcept/<version>.lua and set `prefix` (and `pyver`) below, e.g.
-- prefix = the output of `spack location -i py-flowcept`.  A Spack-generated module
-- (`spack module lmod refresh py-flowcept`) sets the paths itself; this template adds the
-- runtime settings and serves sites that install without Spack.

local prefix = "/opt/flowcept/0.1.0"   -- SITE: the installation prefix
local pyver  = "3.11"                  -- SITE: python major.minor flowcept was built for

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
prepend_path("PYTHONPATH", pathJoin(prefix, "lib", "python" .. pyver, "site-packages"))
prepend_path("CPATH", pathJoin(prefix, "include"))
prepend_path("LIBRARY_PATH", pathJoin(prefix, "lib"))
prepend_path("LD_LIBRARY_PATH", pathJoin(prefix, "lib"))
