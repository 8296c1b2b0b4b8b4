# A private single-node Slurm for the tests and for trying scripts/slurm.sbatch: Debian's
# slurmctld + slurmd + munged, configured in one directory, on ports nobody else uses, stopped
# by PID. Source it (after common.sh); it does nothing on its own.
#   slurm_start DIR   install what is missing, write DIR/slurm.conf, start the three daemons,
#                     wait for the node to be idle; exports SLURM_CONF. Fails with one line
#                     (in $SLURM_SKIP_REASON too) when Slurm cannot run here.
#   slurm_stop DIR    cancel every job of this cluster, stop exactly the daemons slurm_start
#                     started (their PIDs are in DIR/*.pid) and remove DIR.

SLURM_APT_PACKAGES=(slurmd slurmctld slurm-client munge)

# Debian's Slurm packages, installed when missing (as root only: the daemons run as root).
slurm_install() {
  local missing=() p
  for p in "${SLURM_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || { SLURM_SKIP_REASON="no apt-get to install ${missing[*]}"; return 1; }
  say "installing ${missing[*]}"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1 ||
    { SLURM_SKIP_REASON="apt-get install ${missing[*]} failed"; return 1; }
}

# The first TCP port from $1 on that nothing listens on, and the one after it free too.
slurm_free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || (exec 3<>"/dev/tcp/127.0.0.1/$((p + 1))") 2>/dev/null; do
    p=$((p + 2))
  done
  echo "$p"
}

# DIR/slurm.conf: this host as the only node, with the cores and memory slurmd detects.
slurm_write_conf() {  # dir
  local dir=$1 host port node
  host=$(hostname -s)
  port=$(slurm_free_port "${SLURM_LOCAL_PORT:-16817}")
  node=$(slurmd -C | head -1)  # NodeName=<host> CPUs=… Boards=… … RealMemory=…
  cat >"$dir/slurm.conf" <<CONF
# Written by scripts/lib/slurm.sh: a one-node test cluster, everything under $dir.
ClusterName=vae-dist-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=${SLURM_LOCAL_REQUEUE_DELAY:-10}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
JobRequeue=1
ReturnToService=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
KillWait=30
MinJobAge=600
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  : >"$dir/plugstack.conf"
}

# munged as the munge user on a private socket with a private key.
slurm_start_munge() {  # dir
  local dir=$1
  mkdir -p "$dir/munge"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=128 count=1 status=none
  chmod 0700 "$dir/munge"
  chmod 0600 "$dir/munge/munge.key"
  chown -R munge:munge "$dir/munge"
  runuser -u munge -- munged --force --socket="$dir/munge/munge.socket" \
    --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
    --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" >/dev/null 2>&1 ||
    { SLURM_SKIP_REASON="munged did not start (see $dir/munge/munged.log)"; return 1; }
  cp "$dir/munge/munged.pid" "$dir/munged.pid"
}

# Waits up to $2 seconds for the command $3… to succeed.
slurm_wait_for() {  # what seconds command…
  local what=$1 t=$2; shift 2
  while ! "$@" >/dev/null 2>&1; do
    t=$((t - 1))
    [ "$t" -ge 0 ] || { SLURM_SKIP_REASON="$what"; return 1; }
    sleep 1
  done
}

slurm_node_idle() { sinfo -h -N -o %t | grep -qx idle; }

slurm_start() {  # dir
  local dir=$1
  SLURM_SKIP_REASON=""
  [ "$(id -u)" -eq 0 ] || { SLURM_SKIP_REASON="not root (the local Slurm runs its daemons as root)"; return 1; }
  slurm_install || return 1
  mkdir -p "$dir/state" "$dir/spool"
  chmod 0755 "$dir"
  slurm_write_conf "$dir"
  export SLURM_CONF=$dir/slurm.conf
  slurm_start_munge "$dir" || return 1
  slurmctld -f "$SLURM_CONF" -i >"$dir/slurmctld.out" 2>&1 ||
    { SLURM_SKIP_REASON="slurmctld did not start (see $dir/slurmctld.log)"; return 1; }
  slurm_wait_for "slurmctld did not answer (see $dir/slurmctld.log)" 20 scontrol ping || return 1
  slurmd -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1 ||
    { SLURM_SKIP_REASON="slurmd did not start (see $dir/slurmd.log)"; return 1; }
  slurm_wait_for "the node did not become idle (see $dir/slurmd.log)" 30 slurm_node_idle || return 1
}

# Sends SIGTERM to the PID in FILE and waits for it to go (SIGKILL after 15 s).
slurm_kill_pidfile() {  # file
  local pid t
  [ -f "$1" ] || return 0
  pid=$(cat "$1")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for t in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.5; done
  kill -KILL "$pid" 2>/dev/null || true
}

# Stops whichever of the three daemons slurm_start started; keeps DIR and its logs.
slurm_kill_daemons() {  # dir
  slurm_kill_pidfile "$1/slurmd.pid"
  slurm_kill_pidfile "$1/slurmctld.pid"
  slurm_kill_pidfile "$1/munged.pid"
}

slurm_stop() {  # dir
  local dir=$1 t
  # Only a directory slurm_start wrote: this removes it.
  grep -qs '^# Written by scripts/lib/slurm.sh' "$dir/slurm.conf" || return 0
  export SLURM_CONF=$dir/slurm.conf
  if [ -f "$dir/slurmctld.pid" ] && scontrol ping >/dev/null 2>&1; then
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null)
    # Pending jobs need a plain cancel; running ones get SIGKILL, not the 30 s KillWait.
    [ -z "$jobs" ] || { scancel --quiet $jobs; scancel --quiet --full --signal=KILL $jobs; } 2>/dev/null || true
    for t in $(seq 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
  fi
  slurm_kill_daemons "$dir"
  rm -rf "$dir"
}
