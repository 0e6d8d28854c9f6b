#!/usr/bin/env bash
# HTTP/2 throughput and idle-connection memory of flotilla-server, against nghttpd
# (nghttp2's own C server) measured in the same run, on the same machine.
#
#   bench/http.sh [ROUNDS] [SECONDS]      defaults: 5 rounds of 5 s per configuration
#
# For each configuration it alternates flotilla and nghttpd, back to back, and prints the
# median req/s of each and their ratio. Both serve a 15-byte body (/healthz vs a file of
# the same size). Ratios are the figures to quote; absolute req/s depend on the machine.
# Not a test: nothing here passes or fails.
source "$(dirname "$0")/common.sh"
ulimit -n 65536 2>/dev/null || ulimit -n 16384 2>/dev/null || true

printf '{"status":"ok"}' > "$WORK/healthz"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/key.pem" \
  -out "$WORK/cert.pem" -days 2 -subj /CN=localhost 2>/dev/null


# Flotilla: default settings (one event loop per core). nghttpd: as many workers as cores.
CORES=$(nproc)
FP=$(free_port); FTP=$(free_port); NP=$(free_port); NTP=$(free_port)
$BIN --listen 127.0.0.1:$FP --data-dir "$WORK/f-data" $NO_LIMITS > "$WORK/f.log" 2>&1 & FPID=$!
$BIN --listen 127.0.0.1:$FTP --data-dir "$WORK/ft-data" $NO_LIMITS --tls-cert "$WORK/cert.pem" --tls-key "$WORK/key.pem" > "$WORK/ft.log" 2>&1 & FTPID=$!
nghttpd --no-tls -n "$CORES" -d "$WORK" $NP > /dev/null 2>&1 & NPID=$!
nghttpd -n "$CORES" -d "$WORK" $NTP "$WORK/key.pem" "$WORK/cert.pem" > /dev/null 2>&1 & NTPID=$!
for p in $FP $FTP $NP $NTP; do wait_port $p; done

rps() {  # url, extra h2load args…
  local url=$1; shift
  h2load -D "$SECONDS_PER_RUN" --warm-up-time=1 "$@" "$url" 2>/dev/null |
    awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($(i+1) == "req/s,") { gsub(",", "", $i); print $i } }'
}

echo "machine: $CORES cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "rounds: $ROUNDS x ${SECONDS_PER_RUN}s, alternating flotilla / nghttpd -n $CORES"
printf '%-22s %14s %14s %8s\n' configuration flotilla_rps nghttpd_rps ratio
bench() {  # name, flotilla url, nghttpd url, h2load args…
  local name=$1 furl=$2 nurl=$3; shift 3
  : > "$WORK/f.txt"; : > "$WORK/n.txt"
  for _ in $(seq "$ROUNDS"); do
    rps "$furl" "$@" >> "$WORK/f.txt"
    rps "$nurl" "$@" >> "$WORK/n.txt"
  done
  local f n
  f=$(median < "$WORK/f.txt"); n=$(median < "$WORK/n.txt")
  printf '%-22s %14.0f %14.0f %8.2f\n' "$name" "$f" "$n" "$(awk -v f="$f" -v n="$n" 'BEGIN { print (n > 0) ? f / n : 0 }')"
}
bench "h2c  -c 50 -m 10" http://127.0.0.1:$FP/healthz http://127.0.0.1:$NP/healthz -c 50 -m 10 -t 1
bench "h2c  -c 50 -m 1" http://127.0.0.1:$FP/healthz http://127.0.0.1:$NP/healthz -c 50 -m 1 -t 1
# An async route (every API route is one): the handler runs on Swift's cooperative pool, two hops more.
bench "h2c  -m 10 async route" http://127.0.0.1:$FP/version http://127.0.0.1:$NP/healthz -c 50 -m 10 -t 1
bench "TLS  -c 50 -m 10" https://127.0.0.1:$FTP/healthz https://127.0.0.1:$NTP/healthz -c 50 -m 10 -t 1
bench "TLS  -c 50 -m 1" https://127.0.0.1:$FTP/healthz https://127.0.0.1:$NTP/healthz -c 50 -m 1 -t 1

# Memory: 5,000 idle HTTP/2 connections (preface + SETTINGS exchanged, then silence).
echo
python3 bench/idle_connections.py 5000 \
  "flotilla:$FPID:$FP" "nghttpd:$NPID:$NP"
