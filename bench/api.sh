#!/usr/bin/env bash
# Management API throughput: `GET /api/v1/devices/{id}` (bearer token, 10,000 devices in
# the embedded PostgreSQL) beside `/healthz` on the same server, in the same run.
#
#   bench/api.sh [ROUNDS] [SECONDS]      defaults: 5 rounds of 5 s per configuration
#
# h2load cycles through 200 random device ids. Prints the median req/s of each, their
# ratio and the median p99 latency (from h2load's per-request log), on a server at
# --log-level warning (the API alone) and on one at the default level, info (one log line
# per request), each against a /healthz measured on the same server in alternation.
# Targets: GET device >= 0.40 x /healthz at warning, >= 0.45 x at info.
# Not a test: nothing passes or fails.
source "$(dirname "$0")/common.sh"


start() {  # name, log level → sets PORT and SERVER
  PORT=$(free_port)
  $BIN --listen 127.0.0.1:$PORT --data-dir "$WORK/data" $NO_LIMITS --log-level "$2" > "$WORK/$1.log" 2>&1 &
  SERVER=$!
  wait_port "$PORT"
}

start quiet warning
TOKEN=$(cat "$WORK/data/admin-token")
PSQL="psql -X -q -t -A -h $WORK/data/run -U flotilla -d flotilla"
$PSQL -c "INSERT INTO devices (name, labels, attributes, token_hash)
          SELECT format('bench-%s', lpad(i::text, 5, '0')), jsonb_build_object('site', 'site-' || (i % 20)),
                 jsonb_build_object('serial', md5(i::text)), sha256(i::text::bytea)
          FROM generate_series(1, 10000) AS i" >/dev/null
$PSQL -c "INSERT INTO groups (name) SELECT 'site-' || i FROM generate_series(0, 19) i" >/dev/null
$PSQL -c "INSERT INTO group_members (group_id, device_id) SELECT g.id, d.id FROM devices d JOIN groups g ON g.name = d.labels->>'site'" >/dev/null
$PSQL -c "ANALYZE" >/dev/null
mapfile -t IDS < <($PSQL -c "SELECT id FROM devices ORDER BY random() LIMIT 200")
URLS=(); for id in "${IDS[@]}"; do URLS+=("http://127.0.0.1:$PORT/api/v1/devices/$id"); done
check=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $TOKEN" "${URLS[0]}")
[ "$check" = 200 ] || { echo "GET device answered $check" >&2; exit 1; }

run() {  # log file, h2load args… → "req/s p99_ms"
  local log=$1; shift
  local out
  out=$(h2load -D "$SECONDS_PER_RUN" --warm-up-time=1 -c 50 -m 10 -t 1 --log-file="$log" "$@" 2>/dev/null)
  local rps; rps=$(awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($(i+1) == "req/s,") { gsub(",", "", $i); print $i } }' <<<"$out")
  local p99; p99=$(awk -F'\t' '{ print $3 }' "$log" | sort -n | awk '{ a[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%.2f", a[i] / 1000 }')
  local bad; bad=$(awk -F'\t' '$2 != 200' "$log" | wc -l)
  [ "$bad" = 0 ] || echo "warning: $bad responses were not 200" >&2
  echo "$rps $p99"
}

# Where the CPU goes: one more run of each on the default (workers) server, with the CPU time of the
# server process and of the whole PostgreSQL cluster (postmaster and backends) per request.
ticks() { local t=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{ print $14 + $15 }' "/proc/$p/stat"))); done; echo "$t"; }
pg_pids() { local pm; pm=$(head -1 "$WORK/data/postgres/postmaster.pid"); echo "$pm" $(pgrep -P "$pm"); }
per_request() {  # label, h2load args… → µs of server and PostgreSQL CPU per request
  local label=$1; shift
  local s0 p0 out n s1 p1 hz
  s0=$(ticks "$SERVER"); p0=$(ticks $(pg_pids))
  out=$(h2load -D "$SECONDS_PER_RUN" -c 50 -m 10 -t 1 "$@" 2>/dev/null)
  s1=$(ticks "$SERVER"); p1=$(ticks $(pg_pids)); hz=$(getconf CLK_TCK)
  n=$(awk '/^requests:/ { print $2 }' <<<"$out")
  awk -v l="$label" -v n="$n" -v s=$((s1 - s0)) -v p=$((p1 - p0)) -v hz="$hz" \
    'BEGIN { printf "%-34s %8d requests   server %6.1f us/request   PostgreSQL %6.1f us/request\n", l, n, s * 1e6 / hz / n, p * 1e6 / hz / n }'
}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); 10,000 devices"
echo "rounds: $ROUNDS x ${SECONDS_PER_RUN}s, h2load -c 50 -m 10 -t 1, alternating"
printf '%-34s %12s %10s %8s\n' route req/s p99_ms ratio
for level in warning info; do
  if [ "$level" != warning ]; then
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true
    start "$level" "$level"
    URLS=(); for id in "${IDS[@]}"; do URLS+=("http://127.0.0.1:$PORT/api/v1/devices/$id"); done
  fi
  : > "$WORK/h.txt"; : > "$WORK/a.txt"
  for _ in $(seq "$ROUNDS"); do
    run "$WORK/h.tsv" "http://127.0.0.1:$PORT/healthz" >> "$WORK/h.txt"
    run "$WORK/a.tsv" -H "authorization: Bearer $TOKEN" "${URLS[@]}" >> "$WORK/a.txt"
  done
  H=$(cut -d' ' -f1 < "$WORK/h.txt" | median); HP=$(cut -d' ' -f2 < "$WORK/h.txt" | median)
  A=$(cut -d' ' -f1 < "$WORK/a.txt" | median); AP=$(cut -d' ' -f2 < "$WORK/a.txt" | median)
  printf '%-34s %12.0f %10s\n' "GET /healthz ($level)" "$H" "$HP"
  printf '%-34s %12.0f %10s %8.2f\n' "GET /api/v1/devices/{id} ($level)" "$A" "$AP" "$(awk -v a="$A" -v h="$H" 'BEGIN { print a / h }')"
  if [ "$level" = warning ]; then
    per_request "CPU: GET /healthz" "http://127.0.0.1:$PORT/healthz"
    per_request "CPU: GET /api/v1/devices/{id}" -H "authorization: Bearer $TOKEN" "${URLS[@]}"
  fi
done
echo "targets: GET device >= 0.40 x /healthz at warning, >= 0.45 x at info"
