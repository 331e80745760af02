# Sourced by the jobs/*.sbatch scripts: thread counts, the MPI launcher, and run_app, which runs
# one app on the job's tasks and resumes or requeues it around checkpoints.
#
# Environment (all optional):
#   MPICOMP_LAUNCHER   srun (default) or mpiexec (the first mpiexec on PATH: with an active
#                      virtual environment, the mpich wheel's Hydra, which starts its proxies
#                      through Slurm)
#   MPICOMP_SRUN_MPI   srun's --mpi plugin (default pmi2: MPICH and the PyPI mpich wheel; a site
#                      Open MPI usually wants pmix)
#   MPICOMP_RUNS       directory for traces (default: runs/ in the submit directory)
#   PYTHON             interpreter (default: python on PATH; sbatch passes on the submitting
#                      shell's environment, so an activated virtual environment carries over)

# Threads: one MPI rank per task, each with the cores Slurm gave it (1 unless --cpus-per-task).
# srun does not inherit sbatch's --cpus-per-task (Slurm ≥ 22.05): SRUN_CPUS_PER_TASK passes it on.
threads=${SLURM_CPUS_PER_TASK:-1}
export SRUN_CPUS_PER_TASK=$threads
export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
       NUMBA_NUM_THREADS=$threads NUMEXPR_NUM_THREADS=$threads
# The apps run as python -m mpicomp.apps.X: from the installed package, or from the checkout at
# MPICOMP_ROOT when it holds one (its code then comes first, whatever the cwd).
[[ -d $MPICOMP_ROOT/mpicomp ]] && export PYTHONPATH=$MPICOMP_ROOT${PYTHONPATH:+:$PYTHONPATH}
PYTHON=${PYTHON:-python}
MPICOMP_RUNS=${MPICOMP_RUNS:-$SLURM_SUBMIT_DIR/runs}

# The exit status of an app stopped by SIGTERM/SIGUSR2 after writing its checkpoint.
EXIT_CHECKPOINTED=75

# launch ARGS...: run "python ARGS..." as one MPI rank per Slurm task.
launch() {
    case ${MPICOMP_LAUNCHER:-srun} in
        # no --kill-on-bad-exit: every rank exits 75 after a checkpoint, and srun must not kill
        # the slower ones on the first one's exit (an error on one rank ends all by MPI_Abort)
        srun)    srun --mpi="${MPICOMP_SRUN_MPI:-pmi2}" "$PYTHON" "$@" ;;
        mpiexec) mpiexec -n "$SLURM_NTASKS" "$PYTHON" "$@" ;;
        *) echo "MPICOMP_LAUNCHER=$MPICOMP_LAUNCHER: choose srun or mpiexec" >&2; return 2 ;;
    esac
}

# trace_status TRACE: the trace's status (finished, running, ...) as mpicomp's trace reader
# sees it, or nothing for a file it cannot read.
trace_status() {
    "$PYTHON" -c 'import sys
from mpicomp.trace import TraceError, read_trace
try:
    print(read_trace(sys.argv[1]).status)
except TraceError:
    pass' "$1" 2>/dev/null || true
}

# run_app TRACE APP [FLAGS...]: python -m mpicomp.apps.APP --trace TRACE FLAGS on every task.
#   - APP is an app's name (diana), or its module as either form names it (apps.diana,
#     mpicomp.apps.diana).
#   - A trace whose status is "finished" (a job requeued after its run ended) is left alone.
#   - A checkpoint beside TRACE (TRACE minus .h5, plus .ckpt.h5) means an earlier run of this
#     job was stopped: add --resume, so the run continues where it stopped.
#   - Exit status 75 means the app caught the signal sent before the time limit (#SBATCH
#     --signal=USR2@SECONDS) and wrote its checkpoint: requeue this job (or array task), whose
#     next start resumes. Any other status is the job's status.
run_app() {
    local trace=$1 app=${2#mpicomp.} rc=0
    app=${app#apps.}
    shift 2
    local known
    known=$("$PYTHON" -c 'from mpicomp.apps import APPS; print(" ".join(APPS))') || {
        echo "mpicomp: $PYTHON cannot import mpicomp; activate its environment or set PYTHON" >&2
        return 2
    }
    if [[ " $known " != *" $app "* ]]; then
        echo "mpicomp: unknown app '$app'; choose from $known" >&2
        return 2
    fi
    if [[ -f $trace && $(trace_status "$trace") == finished ]]; then
        echo "mpicomp: $trace is already finished; nothing to run"
        return 0
    fi
    # a checkpoint: continue; none: start afresh, over what an earlier start left (a run killed
    # before its first checkpoint). "${resume[@]+...}": an empty array is "unbound" to set -u
    # before bash 4.4.
    local resume=(--overwrite)
    [[ -f ${trace%.h5}.ckpt.h5 ]] && resume=(--resume)
    mkdir -p "$(dirname "$trace")"
    # the trace's lock (one live run per trace) can only be left by this job's previous start,
    # which is over: on another node after a node failure its owner cannot be checked from here
    rm -f "$trace.lock"
    echo "mpicomp: job ${SLURM_JOB_ID} start ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST}:" \
         "mpicomp.apps.$app ${resume[*]} $* -> $trace"
    launch -m "mpicomp.apps.$app" --trace "$trace" "${resume[@]}" "$@" || rc=$?
    if [[ $rc -eq $EXIT_CHECKPOINTED ]]; then
        local job=$SLURM_JOB_ID
        [[ -n ${SLURM_ARRAY_JOB_ID:-} ]] && job=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
        echo "mpicomp: checkpoint written; requeueing job $job to resume"
        scontrol requeue "$job"
        return 0
    fi
    echo "mpicomp: mpicomp.apps.$app exited with status $rc"
    return "$rc"
}
