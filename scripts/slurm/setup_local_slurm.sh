#!/usr/bin/env bash
# bash scripts/slurm/setup_local_slurm.sh   (root, Debian/Ubuntu: a one-node SLURM cluster on this machine)
#
# For tests and demos: installs Debian's slurmctld, slurmd, slurm-client and munge, writes a single-node
# /etc/slurm/slurm.conf with this machine's hostname and its real CPUs and memory (from `slurmd -C`),
# creates a munge key, starts munged, slurmctld and slurmd in the background and waits until `sinfo`
# shows the node usable. Idempotent: a second call re-uses what is installed and running.
# Exits non-zero, with the reason on stderr, when it cannot (not root, no apt-get, install failed, a
# daemon did not come up). Not for a real cluster: no accounting, no cgroups, everything runs as root.
# Knobs (environment): SLURM_SETUP_TIMEOUT=60 (seconds to wait for the node), SLURM_PARTITION=debug.
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
WAIT_S="${SLURM_SETUP_TIMEOUT:-60}"
CONF=/etc/slurm/slurm.conf
LOG_DIR=/var/log/slurm

say() { echo "setup_local_slurm: $*"; }
fail() { echo "setup_local_slurm: cannot set up SLURM: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (installs packages and starts daemons); running as $(id -un)"

# --- packages ---------------------------------------------------------------------------------------
export PATH="$PATH:/usr/sbin:/sbin"
missing=()
for tool in slurmctld slurmd sbatch sinfo munged; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || fail "${missing[*]} missing and no apt-get to install them"
  say "installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  # no init system here: keep package scripts from trying to start services (we start them below)
  policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && policy_created=1
  fi
  apt_install() { timeout 900 apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge; }
  if ! apt_install >/tmp/setup_local_slurm.apt.log 2>&1; then
    timeout 300 apt-get update -q >>/tmp/setup_local_slurm.apt.log 2>&1 || true
    apt_install >>/tmp/setup_local_slurm.apt.log 2>&1 || {
      [ "$policy_created" = 1 ] && rm -f /usr/sbin/policy-rc.d
      tail -n 15 /tmp/setup_local_slurm.apt.log >&2
      fail "apt-get install slurmctld slurmd slurm-client munge failed (log: /tmp/setup_local_slurm.apt.log)"
    }
  fi
  [ "$policy_created" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
for tool in slurmctld slurmd sbatch sinfo munged; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool still not found after installing"
done

# --- a process we started earlier, from its pid file (never matched by name) ---------------------------
alive() {  # alive PIDFILE COMM
  local pid
  [ -s "$1" ] || return 1
  pid="$(cat "$1")"
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ]
}

# --- munge --------------------------------------------------------------------------------------------
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  if command -v mungekey >/dev/null 2>&1; then
    mungekey --create --keyfile /etc/munge/munge.key --force
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
MUNGE_USER=root
id munge >/dev/null 2>&1 && MUNGE_USER=munge
chown "$MUNGE_USER:" /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key
if ! alive /run/munge/munged.pid munged; then
  say "starting munged"
  if [ "$MUNGE_USER" = munge ]; then
    runuser -u munge -- munged --pid-file=/run/munge/munged.pid || fail "munged did not start"
  else
    munged --force --pid-file=/run/munge/munged.pid || fail "munged did not start"
  fi
fi
for _ in $(seq 1 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
munge -n | unmunge >/dev/null 2>&1 || fail "munge round trip failed (munge -n | unmunge)"

# --- slurm.conf ---------------------------------------------------------------------------------------
HOST="$(hostname -s)"
# `slurmd -C` prints this machine's real layout: NodeName=... CPUs=... RealMemory=...
NODE_LINE="$(slurmd -C 2>/dev/null | head -n 1)"
case "$NODE_LINE" in NodeName=*) ;; *) fail "slurmd -C did not report the node's hardware: '$NODE_LINE'";; esac
NODE_LINE="${NODE_LINE/NodeName=* CPUs=/NodeName=$HOST NodeAddr=127.0.0.1 CPUs=}"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
NEW_CONF="$(cat <<EOF
# Written by scripts/slurm/setup_local_slurm.sh: a single-node test cluster (no accounting, no cgroups).
ClusterName=recsys-local
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=600
$NODE_LINE State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)"
changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
  say "writing $CONF ($NODE_LINE)"
  printf '%s\n' "$NEW_CONF" > "$CONF"
  changed=1
fi

# --- daemons ------------------------------------------------------------------------------------------
start_daemon() {  # start_daemon NAME PIDFILE
  if alive "$2" "$1"; then
    if [ "$changed" = 1 ]; then say "restarting $1 (new config)"; kill "$(cat "$2")"; sleep 1; else return 0; fi
  fi
  say "starting $1"
  "$1" >>"$LOG_DIR/$1.stdout" 2>&1 || { tail -n 20 "$LOG_DIR/$1.log" >&2 || true; fail "$1 did not start"; }
}
start_daemon slurmctld /run/slurmctld.pid
start_daemon slurmd /run/slurmd.pid

state=""
for _ in $(seq 1 "$((WAIT_S * 2))"); do
  state="$(sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1 | tr -d '*~#')"
  case "$state" in
    idle|mixed|allocated|completing) say "node $HOST is $state in partition $PARTITION"; exit 0;;
    down|drained|draining|fail) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true;;
  esac
  sleep 0.5
done
tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 2>/dev/null || true
fail "node $HOST not usable after ${WAIT_S}s (sinfo state: '${state:-no answer}')"
