#!/usr/bin/env bash
# The artifact store's throughput against references measured in the same run.
#
#   bench/artifacts.sh [ROUNDS] [MIB]     defaults: 5 rounds of a 256 MiB file
#
# 1. Upload: curl --data-binary (HTTP/1.1, Content-Length) into POST /api/v1/artifacts,
#    which streams to disk, hashes and fsyncs; reference: `cat FILE > COPY; sync` plus
#    `sha256sum FILE` on the same disk (the work the server cannot avoid).
# 2. Download: curl GET …/content over HTTP/1.1 and nghttp over h2c, beside nghttpd
#    serving the same file over h2c.
# Prints medians and ratios. Not a test: nothing passes or fails.
source "$(dirname "$0")/common.sh"
MIB=${2:-256}
start_server --max-artifact-size $((MIB << 21))
NPORT=$(free_port)
head -c $((MIB << 20)) /dev/urandom > "$WORK/model.bin"
SHA=$(sha256sum "$WORK/model.bin" | cut -d' ' -f1)
mkdir -p "$WORK/www" && ln "$WORK/model.bin" "$WORK/www/model.bin"
nghttpd --no-tls -d "$WORK/www" "$NPORT" >/dev/null 2>&1 &
wait_port "$NPORT"
echo "machine: $(nproc) cores; file: $MIB MiB"

secs() { local s; s=$(date +%s.%N); "$@" >/dev/null; awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }'; }
up=(); ref=(); h1=(); h2=(); nd=()
for round in $(seq "$ROUNDS"); do
  # Each round deletes the stored copy first, so every upload really writes.
  curl -s -o /dev/null -X DELETE -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/artifacts/$SHA"
  up+=("$(secs curl -sS -f -o /dev/null -H "authorization: Bearer $TOKEN" --data-binary "@$WORK/model.bin" \
             "http://127.0.0.1:$PORT/api/v1/artifacts?name=model.bin")")
  ref+=("$(secs sh -c "cat '$WORK/model.bin' > '$WORK/copy.bin' && sync '$WORK/copy.bin' && sha256sum '$WORK/model.bin'")")
  rm -f "$WORK/copy.bin"
  h1+=("$(secs curl -sS -f -o /dev/null -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/artifacts/$SHA/content")")
  h2+=("$(secs nghttp -n -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/artifacts/$SHA/content")")
  nd+=("$(secs nghttp -n "http://127.0.0.1:$NPORT/model.bin")")
done
rate() { awk -v m="$MIB" -v t="$1" 'BEGIN { printf "%.0f MiB/s", m / t }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b / a }'; }
U=$(printf '%s\n' "${up[@]}" | median); R=$(printf '%s\n' "${ref[@]}" | median)
D1=$(printf '%s\n' "${h1[@]}" | median); D2=$(printf '%s\n' "${h2[@]}" | median); N=$(printf '%s\n' "${nd[@]}" | median)
echo "upload (HTTP/1.1 curl):   median ${U}s, $(rate "$U"); reference cat+sync+sha256sum ${R}s; ratio $(ratio "$U" "$R")"
echo "download HTTP/1.1 (curl): median ${D1}s, $(rate "$D1")"
echo "download h2c (nghttp):    median ${D2}s, $(rate "$D2"); nghttpd same file ${N}s; ratio $(ratio "$D2" "$N")"
