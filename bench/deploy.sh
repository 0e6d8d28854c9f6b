#!/usr/bin/env bash
# Deployments at fleet scale, and the cost of an idle agent poll.
#
#   bench/deploy.sh [ROUNDS] [SECONDS]     defaults: 5 rounds; 5 s per h2load run
#
# 1. Fan-out: POST /api/v1/deployments targeting a group of 100,000 devices (the flow
#    hardhat-model from flows/), ROUNDS times; each round also supersedes the previous
#    round's 100k queued targets. Prints round 1 (target: < 1 s), the median of the
#    superseding rounds, and the time to read the superseded first deployment.
# 2. Polls: h2load on GET /api/v1/agent/next with a device token and nothing pending,
#    beside /healthz in the same run. Prints median req/s and the ratio (target: ≥ 0.3).
# Not a test: nothing passes or fails.
source "$(dirname "$0")/common.sh"
start_server
PSQL="psql -X -q -t -A -h $WORK/data/run -U flotilla -d flotilla"
# Device i's token is flt_d_bench<i>; device 0 is outside the group (it polls with nothing pending).
$PSQL -c "INSERT INTO devices (name, token_hash) SELECT format('dev-%s', lpad(i::text, 6, '0')), sha256(('flt_d_bench' || i)::bytea)
          FROM generate_series(0, 100000) AS i" >/dev/null
$PSQL -c "INSERT INTO groups (name) VALUES ('fleet')" >/dev/null
$PSQL -c "INSERT INTO group_members (group_id, device_id) SELECT g.id, d.id FROM devices d, groups g WHERE d.name <> 'dev-000000'" >/dev/null
$PSQL -c "ANALYZE" >/dev/null
upload_model  # the flow's download step names it
echo "machine: $(nproc) cores; 100,000 devices in group fleet"
times=()
for round in $(seq "$ROUNDS"); do
  t=$(curl -s -o "$WORK/out.json" -w '%{time_total}' -H "authorization: Bearer $TOKEN" \
        http://127.0.0.1:$PORT/api/v1/deployments \
        -d '{"flow":{"name":"hardhat-model"},"target":{"groups":["fleet"]},"params":{"version":"'$round'","artifact":"'$SHA'","size":'$SIZE'}}')
  grep -q '"devices_targeted":100000' "$WORK/out.json" || { cat "$WORK/out.json" >&2; exit 1; }
  echo "  round $round: ${t}s ($(grep -o '"superseded":[0-9]*' "$WORK/out.json"))"
  if [ "$round" = 1 ]; then first=$(grep -o '"id":"[^"]*' "$WORK/out.json" | cut -d'"' -f4); t1=$t; else times+=("$t"); fi
done
echo "fan-out 100k devices, nothing to supersede (round 1): $t1 s (target < 1 s)"
[ ${#times[@]} -gt 0 ] && echo "fan-out 100k devices superseding the previous 100k: median $(printf '%s\n' "${times[@]}" | median) s"
# Reading a superseded deployment counts its 100k targets not handed out yet.
g=(); for _ in 1 2 3; do g+=("$(curl -s -o /dev/null -w '%{time_total}' -H "authorization: Bearer $TOKEN" http://127.0.0.1:$PORT/api/v1/deployments/$first)"); done
echo "GET of the first (superseded) deployment: median $(printf '%s\n' "${g[@]}" | median) s"

poll() { h2load -D "$SECONDS_PER_RUN" --warm-up-time=1 -c 50 -m 10 -t 1 "$@" 2>/dev/null \
           | awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($(i+1) == "req/s,") { gsub(",", "", $i); print $i } }'; }
h=(); p=()
for round in $(seq "$ROUNDS"); do
  h+=("$(poll http://127.0.0.1:$PORT/healthz)")
  p+=("$(poll -H 'authorization: Bearer flt_d_bench0' "http://127.0.0.1:$PORT/api/v1/agent/next")")
done
H=$(printf '%s\n' "${h[@]}" | median); P=$(printf '%s\n' "${p[@]}" | median)
echo "healthz: $H req/s; agent/next (nothing pending): $P req/s; ratio $(awk -v a="$P" -v b="$H" 'BEGIN { printf "%.2f", a / b }') (target ≥ 0.3)"
