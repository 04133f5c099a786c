#!/bin/sh
# flowcept SLURM TaskProlog (runs as the job's user before each task; SLURM reads its stdout:
# "export NAME=value" lines go into the task's environment).
#
# Exports FLOWCEPT_SHM_DIR and FLOWCEPT_RUN_DIR expanded from the same site configuration as
# the epilog, so that what a job leaves behind is where the epilog looks for it.
# Install: slurm.conf `TaskProlog=/path/to/flowcept-taskprolog.sh`.  Always exits 0.
# These values win over the job's own FLOWCEPT_RUN_DIR/FLOWCEPT_SHM_DIR (a job that exports
# FLOWCEPT_KEEP_ENV=yes keeps its own; what such a job leaves on a node is then recovered into
# the site's run dir, not its own).  Cost: one Python start per task; sites that want none can write the two export
# lines in shell instead (see slurm/README.md).

CONF="${FLOWCEPT_EPILOG_CONF:-/etc/flowcept/epilog.conf}"
FLOWCEPT_EPILOG_PYTHON=python3
FLOWCEPT_EPILOG_ENABLED=yes
if [ -f "$CONF" ] && [ ! -L "$CONF" ]; then
    . "$CONF"
fi
case "$FLOWCEPT_EPILOG_ENABLED" in no|NO|0|false|off) exit 0 ;; esac
if [ -n "$FLOWCEPT_RUN_DIR" ]; then
    case "${FLOWCEPT_KEEP_ENV:-no}" in yes|YES|Yes|1|true|TRUE|on|ON) exit 0 ;; esac
fi
if [ -f "$CONF" ]; then
    timeout 20 "$FLOWCEPT_EPILOG_PYTHON" -m flowcept prolog --conf "$CONF" 2>/dev/null
else
    timeout 20 "$FLOWCEPT_EPILOG_PYTHON" -m flowcept prolog 2>/dev/null
fi
exit 0
