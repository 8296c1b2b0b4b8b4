# A private Slurm for the tests and for trying scripts/slurm.sbatch: Debian's slurmctld, one
# slurmd per node and munged, configured in one directory, on ports nobody else uses, stopped
# by PID. Source it (after common.sh); it does nothing on its own.
#   slurm_start DIR [NODES]  install what is missing, write DIR/slurm.conf, start the daemons,
#                     wait for every node to be idle; exports SLURM_CONF. NODES 1 (default):
#                     this host is the node. NODES 2-4: each node vd-nodeN is a network + UTS +
#                     mount namespace of its own (address on a private bridge, hostname, its
#                     own PMIx directory), as separate hosts on one shared file system are.
#                     Fails with one line (in $SLURM_SKIP_REASON too) when Slurm cannot run.
#   slurm_node_down DIR N    node N loses power: its link goes down, then every process in
#                     its namespace (slurmd, the job's steps and ranks) is killed with SIGKILL.
#   slurm_node_up DIR N      node N boots again: link up, its slurmd started.
#   slurm_stop DIR    cancel every job of this cluster, stop exactly the daemons slurm_start
#                     started (their PIDs are in DIR/*.pid), remove the namespaces and links
#                     it made (listed in DIR/net) and DIR.

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

# The node lines of DIR/slurm.conf: this host (one node), or vd-node1… at the namespaces'
# addresses, each with the cores and memory slurmd detects (all nodes share this machine's).
slurm_node_lines() {  # dir nodes
  local dir=$1 nodes=$2 hw n
  hw=$(slurmd -C | head -1 | sed 's/^NodeName=[^ ]* //')  # CPUs=… Boards=… … RealMemory=…
  if [ "$nodes" = 1 ]; then
    echo "NodeName=$(hostname -s) NodeAddr=127.0.0.1 $hw State=UNKNOWN"
    return
  fi
  for n in $(seq "$nodes"); do echo "NodeName=vd-node$n NodeAddr=$(slurm_node_addr "$dir" "$n") $hw State=UNKNOWN"; done
}

# DIR/slurm.conf: the nodes; a default partition `local` whose jobs share cores (up to 4 on
# each) and may be preempted (requeued, after SIGTERM and GraceTime) by jobs of the partition
# `high`; a node not answering for 10 s is DOWN, and a job's processes get KillWait 5 s between
# SIGTERM and SIGKILL.
slurm_write_conf() {  # dir nodes
  local dir=$1 nodes=$2 host port ctl nodelist
  host=$(hostname -s)
  port=$(slurm_free_port "${SLURM_LOCAL_PORT:-16817}")
  if [ "$nodes" = 1 ]; then ctl=127.0.0.1 nodelist=$host; else ctl=$(slurm_bridge_addr "$dir") nodelist="vd-node[1-$nodes]"; fi
  cat >"$dir/slurm.conf" <<CONF
# Written by scripts/lib/slurm.sh: a $nodes-node test cluster, everything under $dir.
ClusterName=vae-dist-local
SlurmctldHost=$host($ctl)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=${SLURM_LOCAL_REQUEUE_DELAY:-10}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd-%n.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd-%n.log
PlugStackConfig=$dir/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
MpiDefault=none
JobRequeue=1
ReturnToService=2
SlurmdTimeout=10
KillWait=5
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
$(slurm_node_lines "$dir" "$nodes")
PartitionName=local Nodes=$nodelist Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4 PriorityTier=1 PreemptMode=REQUEUE GraceTime=${SLURM_LOCAL_GRACE_TIME:-30}
PartitionName=high Nodes=$nodelist MaxTime=INFINITE State=UP OverSubscribe=NO PriorityTier=2 PreemptMode=OFF
CONF
  : >"$dir/plugstack.conf"
  # PMIx makes per-step directories under /tmp by name: nodes sharing /tmp would collide, so
  # each node's namespace mounts its own directory here.
  echo "PMIxCliTmpDirBase=$dir/nodetmp" >"$dir/mpi.conf"
  mkdir -p "$dir/nodetmp"
}

# --- namespace nodes: addresses, network, slurmd ---------------------------------------------
# DIR/net lists what slurm_net_up made, a line each: "subnet A.B.C", "netns NAME", "link NAME".
slurm_net_field() { awk -v k="$2" '$1 == k {print $2}' "$1/net" 2>/dev/null; }
slurm_bridge_addr() { echo "$(slurm_net_field "$1" subnet).1"; }
slurm_node_addr() { echo "$(slurm_net_field "$1" subnet).$(($2 + 1))"; }
slurm_node_netns() { slurm_net_field "$1" netns | sed -n "${2}p"; }
slurm_node_link() { slurm_net_field "$1" link | sed -n "$(($2 + 1))p"; }  # the first link is the bridge

# A bridge with an address on a free /24 (10.217.N.0) and one namespace per node, joined by a
# veth; names carry this shell's PID (interface names stay ≤ 15 characters).
slurm_net_up() {  # dir nodes
  local dir=$1 nodes=$2 id=$$ third subnet="" br ns veth n lockfd
  command -v ip >/dev/null 2>&1 && command -v nsenter >/dev/null 2>&1 && command -v unshare >/dev/null 2>&1 ||
    { SLURM_SKIP_REASON="needs ip (iproute2), nsenter and unshare (util-linux) for namespace nodes"; return 1; }
  exec {lockfd}<"${BASH_SOURCE[0]}"
  flock "$lockfd"
  for third in $(seq 0 63); do
    ip -4 -o addr show | grep -q " inet 10\.217\.$third\." || { subnet=10.217.$third; break; }
  done
  [ -n "$subnet" ] || { flock -u "$lockfd"; SLURM_SKIP_REASON="no free 10.217.N.0/24 subnet"; return 1; }
  br=vdsb$id
  echo "subnet $subnet" >"$dir/net"
  { ip link add "$br" type bridge && echo "link $br" >>"$dir/net" &&
    ip addr add "$subnet.1/24" dev "$br" && ip link set "$br" up; } >/dev/null 2>&1 ||
    { flock -u "$lockfd"; SLURM_SKIP_REASON="cannot create a bridge (ip link add type bridge)"; return 1; }
  flock -u "$lockfd"
  exec {lockfd}<&-
  for n in $(seq "$nodes"); do
    ns=vds$id-$n veth=vds${id}n$n
    { ip netns add "$ns" && echo "netns $ns" >>"$dir/net" &&
      ip link add "$veth" type veth peer name eth0 netns "$ns" && echo "link $veth" >>"$dir/net" &&
      ip link set "$veth" master "$br" && ip link set "$veth" up && ip -n "$ns" link set lo up &&
      ip -n "$ns" addr add "$subnet.$((n + 1))/24" dev eth0 && ip -n "$ns" link set eth0 up; } >/dev/null 2>&1 ||
      { SLURM_SKIP_REASON="cannot create network namespace $ns (ip netns add, veth)"; return 1; }
  done
}

# slurmd of node N inside its namespaces: nsenter (not `ip netns exec`, which remounts /sys and
# hides the cgroup file system slurmd needs), a hostname and a PMIx directory of its own.
slurm_node_start_slurmd() {  # dir n
  local dir=$1 n=$2 ns
  ns=$(slurm_node_netns "$dir" "$n")
  mkdir -p "$dir/spool/vd-node$n" "$dir/nodetmp-$n"
  nsenter --net="/run/netns/$ns" unshare --uts --mount --propagation private sh -c \
    'hostname "$1" && mount --bind "$2" "$3" && exec slurmd -f "$4"' slurmd-start "vd-node$n" \
    "$dir/nodetmp-$n" "$dir/nodetmp" "$SLURM_CONF" >"$dir/slurmd-vd-node$n.out" 2>&1
}

slurm_node_down() {  # dir n
  local dir=$1 n=$2 ns p
  ns=$(slurm_node_netns "$dir" "$n")
  [ -n "$ns" ] || { echo "slurm: no node $n in $dir" >&2; return 2; }
  ip link set "$(slurm_node_link "$dir" "$n")" down
  for p in $(ip netns pids "$ns"); do kill -KILL "$p" 2>/dev/null || true; done  # one may have exited since
  rm -f "$dir/slurmd-vd-node$n.pid"
}

slurm_node_up() {  # dir n
  local dir=$1 n=$2
  export SLURM_CONF=$dir/slurm.conf
  ip link set "$(slurm_node_link "$dir" "$n")" up &&
    slurm_node_start_slurmd "$dir" "$n"
}

# Ends the processes left in the namespaces (job steps), then the namespaces and links.
slurm_net_down() {  # dir
  local dir=$1 ns p link
  [ -f "$dir/net" ] || return 0
  # A process may exit between `ip netns pids` and the kill, a link go with its namespace: each
  # step may find its work done, which must not end the caller's `set -e` script half-way.
  for ns in $(slurm_net_field "$dir" netns); do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for link in $(slurm_net_field "$dir" link); do
    if ip link show "$link" >/dev/null 2>&1; then ip link del "$link" 2>/dev/null || true; fi
  done
  rm -f "$dir/net"
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

# Every node of the cluster idle (and at least one listed).
slurm_nodes_idle() { local states; states=$(sinfo -h -N -p local -o %t) && [ -n "$states" ] && ! grep -qvx idle <<<"$states"; }

slurm_start() {  # dir [nodes]
  local dir=$1 nodes=${2:-1} n
  SLURM_SKIP_REASON=""
  [ "$(id -u)" -eq 0 ] || { SLURM_SKIP_REASON="not root (the local Slurm runs its daemons as root)"; return 1; }
  [[ "$nodes" =~ ^[1-4]$ ]] || { SLURM_SKIP_REASON="nodes: expected 1 to 4, got '$nodes'"; return 1; }
  slurm_install || return 1
  mkdir -p "$dir/state" "$dir/spool"
  chmod 0755 "$dir"
  if [ "$nodes" -gt 1 ]; then slurm_net_up "$dir" "$nodes" || return 1; fi
  slurm_write_conf "$dir" "$nodes"
  export SLURM_CONF=$dir/slurm.conf
  slurm_start_munge "$dir" || return 1
  slurmctld -f "$SLURM_CONF" -i >"$dir/slurmctld.out" 2>&1 ||
    { SLURM_SKIP_REASON="slurmctld did not start (see $dir/slurmctld.log)"; return 1; }
  slurm_wait_for "slurmctld did not answer (see $dir/slurmctld.log)" 20 scontrol ping || return 1
  if [ "$nodes" = 1 ]; then
    mkdir -p "$dir/spool/$(hostname -s)"
    slurmd -f "$SLURM_CONF" >"$dir/slurmd.out" 2>&1 ||
      { SLURM_SKIP_REASON="slurmd did not start (see $dir/slurmd-*.log)"; return 1; }
  else
    for n in $(seq "$nodes"); do
      slurm_node_start_slurmd "$dir" "$n" ||
        { SLURM_SKIP_REASON="slurmd of vd-node$n did not start (see $dir/slurmd-vd-node$n.log)"; return 1; }
    done
  fi
  # Registration takes about a second; the margin is for a machine busy with other jobs.
  slurm_wait_for "the nodes did not become idle" 60 slurm_nodes_idle ||
    { SLURM_SKIP_REASON+=" ($(slurm_nodes_diagnosis "$dir"))"; return 1; }
}

# Why nodes are not idle, on one line: each node's state and reason, and the newest error line
# of the daemons' logs.
slurm_nodes_diagnosis() {  # dir
  local states err
  states=$(sinfo -h -N -p local -o '%N %t %E' 2>&1 | tr '\n' ';')
  err=$(grep -h -i "error" "$1"/slurmd*.log "$1"/slurmctld.log 2>/dev/null | grep -v "Trying backup state save" | tail -1)
  echo "sinfo: ${states:-nothing}; last log error: ${err:-none}; logs in $1/slurmd-*.log"
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

# Stops whichever daemons slurm_start started and removes its namespaces; keeps DIR and its logs.
slurm_kill_daemons() {  # dir
  local f
  for f in "$1"/slurmd-*.pid; do slurm_kill_pidfile "$f"; done
  slurm_kill_pidfile "$1/slurmctld.pid"
  slurm_kill_pidfile "$1/munged.pid"
  slurm_net_down "$1"
}

slurm_stop() {  # dir
  local dir=$1 t
  # Only a directory slurm_start wrote: this removes it.
  grep -qs '^# Written by scripts/lib/slurm.sh' "$dir/slurm.conf" || return 0
  export SLURM_CONF=$dir/slurm.conf
  if [ -f "$dir/slurmctld.pid" ] && scontrol ping >/dev/null 2>&1; then
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null)
    # Pending jobs need a plain cancel; running ones get SIGKILL, not the KillWait.
    [ -z "$jobs" ] || { scancel --quiet $jobs; scancel --quiet --full --signal=KILL $jobs; } 2>/dev/null || true
    for t in $(seq 60); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 1; done
  fi
  slurm_kill_daemons "$dir"
  rm -rf "$dir"
}
