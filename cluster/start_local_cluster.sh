#!/usr/bin/env bash
# Start a local multi-process Ray cluster on this machine: one head node (no session slots: it runs the
# Serve controller, the HTTP proxy, the API replicas and the scheduler, like the head of a real cluster)
# plus N worker nodes, each advertising K session slots as the custom slot resource.
#
#   cluster/start_local_cluster.sh                      # head + 2 workers x 4 slots, token auth
#   WORKERS=3 SLOTS=8 cluster/start_local_cluster.sh
#   cluster/stop_local_cluster.sh                       # stops exactly what this started, by pid
#
# Settings (environment):
#   WORKERS=2          worker nodes to start
#   SLOTS=4            session slots per worker node (resource SLOT_RESOURCE)
#   HEAD_SLOTS=0       session slots on the head (0: the head runs no sessions)
#   WORKER_CPUS=1      logical CPUs per worker node (for cpu_per_session > 0, face tasks, batch jobs)
#   WORKER_GPUS=       GPUs per worker node (unset: Ray detects them; 0 on a CPU-only machine)
#   SLOT_RESOURCE=avatar_slot   must equal the app's slot_resource (AVATAR_SLOT_RESOURCE)
#   PORT=6390          GCS port of the head (not 6379: that is Redis' port)
#   DASHBOARD_PORT=8275  dashboard (and `serve deploy` REST API); 0 turns the dashboard off
#   STATE_DIR=/tmp/avatars-cluster   pids, token, env file, Ray's temp dir and node logs (keep it short:
#                      Unix socket paths live under it)
#   RAY_AUTH_MODE=token  token auth on (default); `disabled` turns it off for the whole cluster
#   RAY_BIN=ray        the `ray` executable (default: .venv/bin/ray when present)
#
# Token auth (Ray >= 2.59): every process of this cluster (nodes, the app, `serve run`, `ray job submit`)
# runs with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH=$STATE_DIR/auth_token, a token generated here
# (mode 0600). The script writes those lines to $STATE_DIR/env: `source` it before joining the cluster.
# An explicit address never turns token auth on by itself, so a process without them cannot connect.
#
# Never runs `ray stop` (that would kill every Ray process on the machine, other users' included).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

WORKERS="${WORKERS:-2}"
SLOTS="${SLOTS:-4}"
HEAD_SLOTS="${HEAD_SLOTS:-0}"
WORKER_CPUS="${WORKER_CPUS:-1}"
WORKER_GPUS="${WORKER_GPUS:-}"
HEAD_CPUS="${HEAD_CPUS:-2}"
SLOT_RESOURCE="${SLOT_RESOURCE:-avatar_slot}"
PORT="${PORT:-6390}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8275}"
STATE_DIR="${STATE_DIR:-/tmp/avatars-cluster}"
NODE_IP="${NODE_IP:-127.0.0.1}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
# SIGTERM makes `ray start --block` drain its node first (30 s by default): bounded shorter here.
export RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="${RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S:-5}"
if [[ -z "${RAY_BIN:-}" ]]; then
  if [[ -x "$repo/.venv/bin/ray" ]]; then RAY_BIN="$repo/.venv/bin/ray"; else RAY_BIN="ray"; fi
fi
PYTHON_BIN="$(dirname "$(command -v "$RAY_BIN")")/python"
[[ -x "$PYTHON_BIN" ]] || PYTHON_BIN="python3"

pids_file="$STATE_DIR/pids"
if [[ -s "$pids_file" ]]; then
  alive=0
  while read -r pid _; do kill -0 "$pid" 2>/dev/null && alive=1; done < "$pids_file"
  if [[ $alive == 1 ]]; then
    echo "a local cluster from $STATE_DIR is still running (pids in $pids_file);" \
         "run cluster/stop_local_cluster.sh first" >&2
    exit 1
  fi
fi
mkdir -p "$STATE_DIR/logs"
: > "$pids_file"
# Ray's temp dir lives under STATE_DIR, so the `ray_current_cluster` file `ray start` writes is not
# /tmp/ray's: a plain `ray.init()` elsewhere on this machine keeps starting its own Ray, never joins ours.
temp_dir="$STATE_DIR/ray"
mkdir -p "$temp_dir"

if [[ "$RAY_AUTH_MODE" == "token" ]]; then
  export RAY_AUTH_TOKEN_PATH="$STATE_DIR/auth_token"
  unset RAY_AUTH_TOKEN
  if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
    (umask 077 && "$PYTHON_BIN" -c 'import secrets; print(secrets.token_hex(32), end="")' > "$RAY_AUTH_TOKEN_PATH")
  fi
else
  unset RAY_AUTH_TOKEN_PATH RAY_AUTH_TOKEN
fi
unset RAY_ADDRESS

free_port() {
  "$PYTHON_BIN" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start one node as `ray start --block` in its own session (setsid): the process is its group's leader
# and Ray's reaper ends the group when it exits, so its pid is all the stop script needs.
start_node() {  # name, then ray start arguments
  local name="$1"; shift
  setsid "$RAY_BIN" start --block --disable-usage-stats --temp-dir="$temp_dir" --node-ip-address="$NODE_IP" \
    "$@" > "$STATE_DIR/logs/$name.out" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid $name" >> "$pids_file"
  echo "started $name (pid $pid)"
}

wait_for_nodes() {  # expected alive node count
  local want="$1" deadline=$((SECONDS + 90))
  while (( SECONDS < deadline )); do
    got="$(RAY_ADDRESS="$NODE_IP:$PORT" "$PYTHON_BIN" - <<'EOF' 2>/dev/null || true
import ray
ray.init(log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
EOF
)"
    if [[ "$got" =~ ^[0-9]+$ ]] && (( got >= want )); then return 0; fi
    for entry in $(cut -d' ' -f1 "$pids_file"); do
      kill -0 "$entry" 2>/dev/null || { echo "node process $entry exited; see $STATE_DIR/logs" >&2; return 1; }
    done
    sleep 1
  done
  echo "timed out waiting for $want nodes; see $STATE_DIR/logs" >&2
  return 1
}

head_args=(--head --port="$PORT" --num-cpus="$HEAD_CPUS" --num-gpus=0
           --ray-client-server-port="$(free_port)" --dashboard-agent-listen-port="$(free_port)"
           --min-worker-port=0 --max-worker-port=0)
if [[ "$HEAD_SLOTS" != "0" ]]; then head_args+=(--resources="{\"$SLOT_RESOURCE\": $HEAD_SLOTS}"); fi
if [[ "$DASHBOARD_PORT" == "0" ]]; then
  head_args+=(--include-dashboard=false)
else
  head_args+=(--include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT")
fi
start_node head "${head_args[@]}"
wait_for_nodes 1 || { "$here/stop_local_cluster.sh"; exit 1; }

for i in $(seq 1 "$WORKERS"); do
  args=(--address="$NODE_IP:$PORT" --num-cpus="$WORKER_CPUS" --resources="{\"$SLOT_RESOURCE\": $SLOTS}"
        --dashboard-agent-listen-port="$(free_port)" --min-worker-port=0 --max-worker-port=0)
  if [[ -n "$WORKER_GPUS" ]]; then args+=(--num-gpus="$WORKER_GPUS"); fi
  start_node "worker$i" "${args[@]}"
done
wait_for_nodes $((WORKERS + 1)) || { "$here/stop_local_cluster.sh"; exit 1; }

env_file="$STATE_DIR/env"
{
  echo "# source this file to join the local avatar cluster"
  echo "export RAY_ADDRESS=$NODE_IP:$PORT"
  echo "export AVATAR_RAY_ADDRESS=$NODE_IP:$PORT"
  echo "export AVATAR_SLOT_RESOURCE=$SLOT_RESOURCE"
  echo "export RAY_AUTH_MODE=$RAY_AUTH_MODE"
  if [[ "$RAY_AUTH_MODE" == "token" ]]; then echo "export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"; fi
} > "$env_file"

total=$((WORKERS * SLOTS + HEAD_SLOTS))
cat <<EOF

Local Ray cluster up: head + $WORKERS worker node(s), $total session slot(s) ($SLOT_RESOURCE).
  address:    $NODE_IP:$PORT
  auth:       RAY_AUTH_MODE=$RAY_AUTH_MODE${RAY_AUTH_TOKEN_PATH:+ (token in $RAY_AUTH_TOKEN_PATH)}
  dashboard:  $( [[ "$DASHBOARD_PORT" == "0" ]] && echo off || echo "http://127.0.0.1:$DASHBOARD_PORT")
  pids:       $pids_file      logs: $STATE_DIR/logs and $temp_dir/session_latest/logs

Run the platform against it:
  source $env_file
  avatarctl run                                   # or, with the Serve config file:
  serve run cluster/serve_config.yaml
Stop it:
  cluster/stop_local_cluster.sh
EOF
