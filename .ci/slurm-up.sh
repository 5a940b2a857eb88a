#!/usr/bin/env bash
# Start a one-node Slurm cluster (munge + slurmctld + slurmd) on this Debian machine, idempotently.
# Needs root. Installs the packages on first use (apt-get update first). State lives under $SLURM_LOCAL_DIR
# (default /tmp/slurm); daemons are stopped by .ci/slurm-down.sh through their pid files.
set -euo pipefail

SLURM_LOCAL_DIR="${SLURM_LOCAL_DIR:-/tmp/slurm}"
CONF=/etc/slurm/slurm.conf

if [[ $(id -u) -ne 0 ]]; then
  echo "slurm-up: must run as root (it installs packages and starts daemons)" >&2
  exit 1
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sinfo >/dev/null \
   || ! command -v munged >/dev/null; then
  echo "slurm-up: installing slurmctld slurmd slurm-client munge"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
fi

mkdir -p "$SLURM_LOCAL_DIR"/{state,spool,log}

# --- munge -----------------------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
  if command -v mungekey >/dev/null; then mungekey --create --force; else
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; fi
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  echo "slurm-up: starting munged"
  su -s /bin/sh munge -c /usr/sbin/munged
  for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
fi
munge -n | unmunge | grep -q 'STATUS: *Success' || { echo "slurm-up: munge does not work" >&2; exit 1; }
if [[ -f /run/munge/munged.pid ]]; then cp /run/munge/munged.pid "$SLURM_LOCAL_DIR/munged.pid"; fi

# --- slurm.conf for this machine ---------------------------------------------------------------------------
HOST=$(hostname -s)
CPUS=$(nproc --all)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.85)}' /proc/meminfo)
mkdir -p /etc/slurm
NEW_CONF=$(mktemp)
cat >"$NEW_CONF" <<CONF
# Written by .ci/slurm-up.sh for a one-node test cluster on $HOST.
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$SLURM_LOCAL_DIR/state
SlurmdSpoolDir=$SLURM_LOCAL_DIR/spool
SlurmctldLogFile=$SLURM_LOCAL_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_LOCAL_DIR/log/slurmd.log
SlurmctldPidFile=$SLURM_LOCAL_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_LOCAL_DIR/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=2
MinJobAge=300
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
if ! cmp -s "$NEW_CONF" "$CONF"; then
  install -m 644 "$NEW_CONF" "$CONF"
  CONF_CHANGED=1
else
  CONF_CHANGED=0
fi
rm -f "$NEW_CONF"

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

if [[ $CONF_CHANGED == 1 ]] && alive "$SLURM_LOCAL_DIR/slurmctld.pid"; then
  echo "slurm-up: configuration changed; reconfiguring"
  scontrol reconfigure || true
fi
if ! alive "$SLURM_LOCAL_DIR/slurmctld.pid"; then
  echo "slurm-up: starting slurmctld"
  slurmctld
fi
if ! alive "$SLURM_LOCAL_DIR/slurmd.pid"; then
  echo "slurm-up: starting slurmd"
  slurmd
fi

for _ in $(seq 1 60); do
  state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
  case "$state" in
    idle|mix|alloc) echo "slurm-up: node $HOST is $state"; exit 0 ;;
    down*|drain*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "slurm-up: node did not become idle; see $SLURM_LOCAL_DIR/log/" >&2
sinfo -N >&2 || true
exit 1
