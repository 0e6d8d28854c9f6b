#!/usr/bin/env bash
# Sustained accepted report transitions per second, with durable commits (the embedded
# PostgreSQL runs with fsync and synchronous_commit on).
#
#   bench/reports.sh [ROUNDS] [DEVICES]     defaults: 3 rounds of 2,000 devices
#
# Each round registers DEVICES virtual devices (flotilla-agent simulate, no step time)
# in a fresh group, deploys hardhat-model to it and lets every device walk its execution
# to `succeeded` (about seven accepted reports each). The simulator times the busy window
# from the first accepted report to the last. Prints the median rate (target ≥ 5,000/s).
# The simulator shares the machine with the server and PostgreSQL. Not a test.
source "$(dirname "$0")/common.sh"
DEVICES=${2:-2000}
swift build -c release --product flotilla-agent >&2
AGENT=.build/release/flotilla-agent
start_server
upload_model
echo "machine: $(nproc) cores; $DEVICES devices per round"
rates=()
for round in $(seq "$ROUNDS"); do
  $AGENT simulate --server "http://127.0.0.1:$PORT" --token "$TOKEN" --devices "$DEVICES" --group "fleet-$round" \
    --prefix "r$round-" --step-time 0 --poll-wait 2 --executions "$DEVICES" --duration 300 --json \
    > "$WORK/sim.json" 2> "$WORK/sim.log" &
  SIM=$!
  for _ in $(seq 600); do grep -q registered "$WORK/sim.log" && break; sleep 0.1; done
  curl -sS -f -o /dev/null -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/deployments" \
    -d '{"flow":{"name":"hardhat-model"},"target":{"groups":["fleet-'$round'"]},"params":{"version":"'$round'","artifact":"'$SHA'","size":'$SIZE'}}'
  wait $SIM
  rate=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["accepted_per_second"])' "$WORK/sim.json")
  echo "  round $round: $(cat "$WORK/sim.json")"
  rates+=("$rate")
done
echo "accepted report transitions: median $(printf '%s\n' "${rates[@]}" | median)/s (target ≥ 5,000/s)"
