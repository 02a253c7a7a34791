#!/usr/bin/env bash
# A team's MLflow tracking server for vaesweep: one `mlflow server` that every sweep (and every Ray
# node) logs to with `vaesweep run ... --tracking-uri http://HOST:PORT`. See mlflow/README.md.
#
#   mlflow/start-server.sh [--home DIR] [--backend URI] [--artifacts DIR|URI] [--host H] [--port P]
#                          [--auth] [-- extra mlflow server flags]
#
# Defaults: home ./mlflow-server, backend sqlite:///HOME/mlflow.db, artifacts HOME/artifacts (proxied
# by the server, so clients need no storage credentials), host 127.0.0.1 (loopback: nothing is
# reachable from other machines until you choose an interface), port 5000. --auth starts MLflow's
# basic-auth app (needs `pip install 'mlflow[auth]'`, $MLFLOW_AUTH_CONFIG_PATH, $MLFLOW_FLASK_SERVER_SECRET_KEY).
set -euo pipefail

home=./mlflow-server backend="" artifacts="" host=127.0.0.1 port=5000 auth=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --home) home=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    --artifacts) artifacts=$2; shift 2 ;;
    --host) host=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --auth) auth=(--app-name basic-auth); shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "start-server.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ ${#auth[@]} -gt 0 ]]; then
  for var in MLFLOW_AUTH_CONFIG_PATH MLFLOW_FLASK_SERVER_SECRET_KEY; do
    if [[ -z "${!var:-}" ]]; then
      echo "start-server.sh: --auth needs $var set (see mlflow/README.md, Basic auth)" >&2
      exit 2
    fi
  done
fi

mkdir -p "$home"
home=$(cd "$home" && pwd)
backend=${backend:-sqlite:///$home/mlflow.db}
artifacts=${artifacts:-$home/artifacts}
echo "MLflow server: backend $backend, artifacts $artifacts, http://$host:$port" >&2
# exec: the server gets this script's signals, so stopping the script stops the server.
exec mlflow server "${auth[@]}" --backend-store-uri "$backend" --serve-artifacts \
  --artifacts-destination "$artifacts" --host "$host" --port "$port" "$@"
