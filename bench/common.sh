# Shared by the bench scripts (sourced, not run): arguments, a release build, a work
# directory cleaned up on exit, and small helpers.
#   ROUNDS=$1 (default 5), SECONDS_PER_RUN=$2 (default 5), BIN, WORK
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-5}
./scripts/setup
swift build -c release --product flotilla-server >&2
BIN=.build/release/flotilla-server
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$WORK"' EXIT
chmod 711 "$WORK"  # the embedded PostgreSQL runs as `postgres` when we are root and must reach its directory

# The benches drive one token, or thousands of connections, from one address: far past the
# production defaults. They keep the limiter running (its cost is measured) with limits no
# benchmark reaches, and no per-address connection cap.
NO_LIMITS="--rate-limit-token 1000000/1000000 --rate-limit-device 1000000/1000000 --max-connections-per-address 0"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# Starts the release server on a free port with its embedded database in $WORK/data and
# waits for it: sets PORT, TOKEN (the admin token) and SERVER_PID. Extra arguments go to the server.
start_server() {
  PORT=$(free_port)
  $BIN --listen 127.0.0.1:$PORT --data-dir "$WORK/data" --log-level warning $NO_LIMITS "$@" > "$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  wait_port "$PORT"
  TOKEN=$(cat "$WORK/data/admin-token")
}

# Uploads a small stand-in model to the artifact store (flows download it): sets SHA and SIZE.
upload_model() {
  SIZE=4096
  head -c $SIZE /dev/urandom > "$WORK/model.zip"
  SHA=$(sha256sum "$WORK/model.zip" | cut -d' ' -f1)
  curl -sS -f -o /dev/null -H "authorization: Bearer $TOKEN" --data-binary "@$WORK/model.zip" \
    "http://127.0.0.1:$PORT/api/v1/artifacts?name=model.zip"
}
