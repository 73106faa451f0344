#!/usr/bin/env bash
# A single-node SLURM for tests: munge, slurmctld and slurmd on loopback, no accounting, no cgroups.
# Needs root and Debian's slurmctld slurmd slurm-client munge. Usage: BASE=dir bash slurm_up.sh
# Prints the slurm.conf path; export SLURM_CONF to it. slurm_down.sh stops it.
set -euo pipefail
BASE=${BASE:-${TMPDIR:-/tmp}/sec-nb-slurm}
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
SlurmctldPort=6817
SlurmdPort=6818
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
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
NodeName=localhost NodeHostname=$(hostname -s) NodeAddr=127.0.0.1 CPUs=$NCPU Sockets=1 CoresPerSocket=$NCPU ThreadsPerCore=1 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF

slurmctld -i
slurmd -N localhost
for i in $(seq 1 120); do [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break; sleep 0.25; done
[ "$(sinfo -h -o %T)" = idle ] || { echo "slurm did not come up; see $BASE/log" >&2; exit 1; }
echo "$SLURM_CONF"
