#!/usr/bin/env bash
# A real Slurm cluster on this one machine, for testing jobs/*.sbatch:
#
#   tests/slurm/cluster.sh start DIR    # prints: export SLURM_CONF=DIR/slurm.conf
#   tests/slurm/cluster.sh stop DIR
#
# start installs Debian's slurm-wlm and munge with apt-get when slurmctld is missing (this needs
# root), starts munged if its socket is absent, writes DIR/slurm.conf and starts one controller
# and two node daemons, node1 and node2, both on this host with 8 CPUs each (more than the
# machine's cores: SlurmdParameters=config_overrides), so multi-node jobs are scheduled for
# real. Everything the cluster writes (state, spool, logs) goes under DIR.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
conf=$dir/slurm.conf
NODES=(node1 node2)
CPUS=8

install() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    if [[ $(id -u) -ne 0 ]]; then
        echo "cluster.sh: slurm-wlm and munge are not installed and installing them needs root" >&2
        exit 1
    fi
    echo "cluster.sh: installing slurm-wlm and munge from Debian's packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
}

start_munge() {
    if [[ -S /run/munge/munge.socket.2 ]] && munge -n >/dev/null 2>&1; then
        return
    fi
    mkdir -p /run/munge /etc/munge
    [[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chmod 0400 /etc/munge/munge.key
    /usr/sbin/munged --force
}

write_conf() {
    local host port=6818
    host=$(hostname -s)
    mkdir -p "$dir"/{state,spool,log,run}
    cat > "$conf" <<CONF
# Written by tests/slurm/cluster.sh: a test cluster of two nodes on one host.
ClusterName=mpicomp-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
SlurmctldPort=6817
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
JobRequeue=1
KillWait=10
CONF
    for node in "${NODES[@]}"; do
        echo "NodeName=$node NodeHostname=$host NodeAddr=127.0.0.1 Port=$port CPUs=$CPUS RealMemory=2000 State=UNKNOWN" >> "$conf"
        port=$((port + 1))
    done
    echo "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >> "$conf"
}

# stop: end the controller and node daemons of this cluster and wait until they have exited, so
# that a restart finds their ports free (munged, shared with anything else, is left running).
stop() {
    local pidfile pids=()
    for pidfile in "$dir"/run/*.pid; do
        [[ -f $pidfile ]] || continue
        pids+=("$(cat "$pidfile")")
        rm -f "$pidfile"
    done
    [[ ${#pids[@]} -gt 0 ]] || return 0
    kill "${pids[@]}" 2>/dev/null || true
    for _ in $(seq 30); do
        kill -0 "${pids[@]}" 2>/dev/null || return 0
        sleep 0.5
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
}

case $action in
    start)
        install
        start_munge
        stop
        write_conf
        export SLURM_CONF=$conf
        slurmctld -f "$conf"
        for node in "${NODES[@]}"; do
            slurmd -f "$conf" -N "$node"
        done
        for _ in $(seq 60); do
            if [[ $(sinfo -h -o '%t %D' 2>/dev/null) == "idle ${#NODES[@]}" ]]; then
                echo "export SLURM_CONF=$conf"
                exit 0
            fi
            sleep 1
        done
        echo "cluster.sh: the nodes did not come up; sinfo says:" >&2
        sinfo >&2 || true
        tail -n 20 "$dir"/log/*.log >&2 || true
        exit 1
        ;;
    stop) stop ;;
    *) usage ;;
esac
