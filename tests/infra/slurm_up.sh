#!/usr/bin/env bash
# A single-node SLURM for tests: munge, slurmctld and slurmd on loopback, no accounting, no cgroups.
# Needs root and Debian's slurmctld slurmd slurm-client munge. Usage: BASE=dir [CTLD_PORT=p SLURMD_PORT=q] bash slurm_up.sh
# Prints the slurm.conf path; export SLURM_CONF to it (clients, and jobs through sbatch's exported environment, find
# the ports there). slurm_down.sh stops it. The tests pass free ports and a first job id of their own, so that two
# test sessions on one machine each get their own cluster (with fixed ports the second one's daemons could not bind,
# and its jobs silently ran on the first one's node).
set -euo pipefail
BASE=${BASE:-${TMPDIR:-/tmp}/sec-nb-slurm}
CTLD_PORT=${CTLD_PORT:-6817}
SLURMD_PORT=${SLURMD_PORT:-6818}
FIRST_JOB_ID=${FIRST_JOB_ID:-1}
NCPU=$(nproc)
rm -rf "$BASE"; mkdir -p "$BASE"/{etc,state,spool,log,run}
export SLURM_CONF=$BASE/etc/slurm.conf

[ -s /etc/munge/munge.key ] || { mkdir -p /etc/munge; mungekey -c -f -k /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 600 /etc/munge/munge.key; }
mkdir -p /run/munge; chown munge:munge /run/munge; chmod 755 /run/munge
munge -n >/dev/null 2>&1 || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null

cat > "$SLURM_CONF" <<CONF
ClusterName=secnb
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued batch job waits one credential lifetime before it starts again (default 120 s): 15 s is ample on loopback
AuthInfo=cred_expire=15
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
FirstJobId=$FIRST_JOB_ID
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$BASE/log/jobcomp.txt
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# test all pending jobs every 1-2 s (defaults 30 and 60 s): a requeued job starts as soon as it may
SchedulerParameters=bf_interval=1,sched_interval=2
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=localhost NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$NCPU Sockets=1 CoresPerSocket=$NCPU ThreadsPerCore=1 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

slurmctld -i
slurmd -N localhost
for i in $(seq 1 300); do [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break; sleep 0.1; done
for d in slurmctld slurmd; do   # our own daemons answer, not another cluster's on the same ports
  kill -0 "$(cat "$BASE/run/$d.pid" 2>/dev/null)" 2>/dev/null || { echo "$d did not start; see $BASE/log/$d.log:" >&2; tail -n 5 "$BASE/log/$d.log" >&2; exit 1; }
done
[ "$(sinfo -h -o %T)" = idle ] || { echo "slurm did not come up; see $BASE/log" >&2; exit 1; }
echo "$SLURM_CONF"
