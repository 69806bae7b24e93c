#!/usr/bin/env bash
# Stop the local cluster cluster/start_local_cluster.sh started: exactly the processes whose pids it
# wrote to $STATE_DIR/pids (each a `ray start --block` that leads its own process group), workers first,
# then the head. Never `ray stop` (that would stop every Ray on the machine).
#
# 1. SIGTERM to each recorded pid: `ray start --block` drains its node (bounded by
#    RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S, which the start script sets) and stops its processes.
# 2. After GRACE_S, SIGKILL to whatever is left in those process groups, and to the Ray worker processes
#    of this cluster (children of our raylets, or processes whose command line names this cluster's own
#    temp dir, $STATE_DIR/ray/): Ray's worker processes lead process groups of their own.
set -uo pipefail

STATE_DIR="${STATE_DIR:-/tmp/avatars-cluster}"
GRACE_S="${GRACE_S:-20}"
pids_file="$STATE_DIR/pids"
temp_dir="$STATE_DIR/ray"
if [[ ! -s "$pids_file" ]]; then
  echo "nothing to stop ($pids_file is missing or empty)"
  exit 0
fi

mapfile -t entries < <(tac "$pids_file")   # reverse start order: workers, then the head

descendants() {  # pid: every process below it
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do echo "$child"; descendants "$child"; done
}

ours() {  # the processes of this cluster that are not group members: raylet children, temp-dir users
  local entry pid
  for entry in "${entries[@]}"; do
    read -r pid _ <<< "$entry"
    [[ -n "$pid" ]] && descendants "$pid"
  done
  pgrep -f -- "$temp_dir/" 2>/dev/null
}

group_alive() {  # pid: the leader or any member of the group it led
  kill -0 "$1" 2>/dev/null || pgrep -g "$1" > /dev/null 2>&1
}

below=($(ours | sort -u))   # taken before anything is signalled

for entry in "${entries[@]}"; do
  read -r pid name <<< "$entry"
  [[ -n "$pid" ]] || continue
  if kill -0 "$pid" 2>/dev/null; then
    echo "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
  fi
done

deadline=$((SECONDS + GRACE_S))
for entry in "${entries[@]}"; do
  read -r pid name <<< "$entry"
  [[ -n "$pid" ]] || continue
  while group_alive "$pid" && (( SECONDS < deadline )); do sleep 0.5; done
  if group_alive "$pid"; then
    echo "$name (pid $pid) still running after ${GRACE_S}s: SIGKILL to its process group"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
  fi
done

sleep 1
for pid in "${below[@]}" $(pgrep -f -- "$temp_dir/" 2>/dev/null); do
  if kill -0 "$pid" 2>/dev/null; then
    echo "killing leftover Ray process $pid"
    kill -KILL "$pid" 2>/dev/null
  fi
done
: > "$pids_file"
echo "local cluster stopped"
