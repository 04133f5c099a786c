#!/bin/sh
# flowcept SLURM epilog (runs as root under slurmd on every node of a job, after the job).
#
# Thin on purpose: it reads the site configuration and runs `flowcept epilog` under a hard
# time bound.  All the work (privilege drop to the job's user, symlink/owner checks, recovery
# of the job's leftover rings and spill files, optional HDF5 compaction) is done by that
# tested command.  This script ALWAYS exits 0: a provenance problem must never drain a node.
#
# Configuration: $FLOWCEPT_EPILOG_CONF, else /etc/flowcept/epilog.conf (shell KEY=value lines,
# see slurm/epilog.conf.example).  It must be owned by root and writable by root only.
# Install: slurm.conf `Epilog=/etc/slurm/epilog.d/*` (or `Epilog=/path/flowcept-epilog.sh`).

CONF="${FLOWCEPT_EPILOG_CONF:-/etc/flowcept/epilog.conf}"

FLOWCEPT_EPILOG_PYTHON=python3
FLOWCEPT_EPILOG_TIME_LIMIT=120
FLOWCEPT_EPILOG_LOG_FILE=
FLOWCEPT_EPILOG_ENABLED=yes

log() {
    msg="$(date +%Y-%m-%dT%H:%M:%S%z) $(hostname) flowcept-epilog.sh[$$]: job=${SLURM_JOB_ID:-?} $*"
    if [ -n "$FLOWCEPT_EPILOG_LOG_FILE" ]; then
        # never through a symlink, never group/other readable
        if [ ! -L "$FLOWCEPT_EPILOG_LOG_FILE" ]; then
            (umask 077; printf '%s\n' "$msg" >> "$FLOWCEPT_EPILOG_LOG_FILE") 2>/dev/null
        fi
    fi
    printf '%s\n' "$msg" >&2
}

if [ -f "$CONF" ]; then
    # Only a root-owned file that nobody else can write decides what root runs here.
    owner="$(stat -c %u "$CONF" 2>/dev/null)"
    perms="$(stat -c %A "$CONF" 2>/dev/null)"
    case "$perms" in
        -????w????*|-???????w??*) log "refused $CONF: writable by group/others ($perms)"; exit 0 ;;
    esac
    if [ -L "$CONF" ] || [ "$owner" != "0" -a "$owner" != "$(id -u)" ]; then
        log "refused $CONF: a symlink or not owned by root (owner $owner)"; exit 0
    fi
    . "$CONF"
fi

case "$FLOWCEPT_EPILOG_ENABLED" in
    no|NO|0|false|off) exit 0 ;;
esac

limit="${FLOWCEPT_EPILOG_TIME_LIMIT%.*}"
case "$limit" in ''|*[!0-9]*) limit=120 ;; esac
# The Python side stops its worker at the limit; timeout(1) is the hard bound on top (+10 s,
# then SIGKILL 5 s later).
hard=$((limit + 10))

set -- epilog --time-limit "$limit"
[ -n "$CONF" ] && [ -f "$CONF" ] && set -- "$@" --conf "$CONF"

if command -v timeout >/dev/null 2>&1; then
    timeout -k 5 "$hard" "$FLOWCEPT_EPILOG_PYTHON" -m flowcept "$@" </dev/null
    rc=$?
else
    "$FLOWCEPT_EPILOG_PYTHON" -m flowcept "$@" </dev/null
    rc=$?
fi
case $rc in
    0) ;;
    124|137) log "flowcept epilog killed after ${hard} s (time limit); rerun: SLURM_JOB_ID=$SLURM_JOB_ID SLURM_JOB_UID=$SLURM_JOB_UID $FLOWCEPT_EPILOG_PYTHON -m flowcept epilog" ;;
    *) log "flowcept epilog exited $rc (see ${FLOWCEPT_EPILOG_LOG_FILE:-its stderr}); the node stays up" ;;
esac
exit 0
