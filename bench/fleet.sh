#!/usr/bin/env bash
# A fleet end to end: DEVICES virtual devices (flotilla-agent simulate, one process) run
# the hardhat-model flow against one server with its embedded PostgreSQL, on this machine.
#
#   bench/fleet.sh [DEVICES] [STEP_SECONDS]      defaults: 10,000 devices, 0 s per step
#
# Prints the time from the deployment to the last device done, the server's CPU seconds
# (user + system, from /proc) and peak RSS (VmHWM) over the run, and checks that every
# device ended `succeeded` with its events complete (a logged transition out of `queued`
# and one into `succeeded`, and the same number of transitions as every other device).
# Not a test: it reports, it does not pass or fail.
source "$(dirname "$0")/common.sh" 1 1
DEVICES=${1:-10000}
STEP=${2:-0}
swift build -c release --product flotilla-agent >&2
AGENT=.build/release/flotilla-agent
start_server
upload_model
cpu() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; }  # clock ticks
echo "machine: $(nproc) cores; $DEVICES devices, ${STEP}s per step"
$AGENT simulate --server "http://127.0.0.1:$PORT" --token "$TOKEN" --devices "$DEVICES" --group fleet \
  --prefix fleet- --step-time "$STEP" --poll-wait 20 --executions "$DEVICES" --duration 1800 --json \
  > "$WORK/sim.json" 2> "$WORK/sim.log" &
SIM=$!
for _ in $(seq 3000); do grep -q registered "$WORK/sim.log" && break; sleep 0.1; done
CPU0=$(cpu)
START=$(date +%s.%N)
ID=$(curl -sS -f -H "authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/v1/deployments" \
  -d '{"flow":{"name":"hardhat-model"},"target":{"groups":["fleet"]},"params":{"version":"1.4","artifact":"'$SHA'","size":'$SIZE'}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
wait $SIM
END=$(date +%s.%N)
CPU1=$(cpu)
TICKS=$(getconf CLK_TCK)
RSS=$(awk '/VmHWM/ { print $2 }' "/proc/$SERVER_PID/status")
echo "simulator: $(cat "$WORK/sim.json")"
PSQL="psql -X -q -t -A -h $WORK/data/run -U flotilla -d flotilla"
SUCCEEDED=$($PSQL -c "SELECT count(*) FROM executions WHERE deployment_id = '$ID' AND state = 'succeeded'")
COMPLETE=$($PSQL -c "SELECT count(*) FROM (SELECT e.id FROM executions e JOIN execution_events v ON v.execution_id = e.id
                      WHERE e.deployment_id = '$ID' GROUP BY e.id
                      HAVING bool_or(v.from_state = 'queued') AND bool_or(v.to_state = 'succeeded')) AS x")
SHAPES=$($PSQL -c "SELECT string_agg(n || ' transitions: ' || c || ' devices', ', ') FROM (SELECT n, count(*) AS c FROM
                    (SELECT count(v.*) AS n FROM executions e LEFT JOIN execution_events v ON v.execution_id = e.id
                     WHERE e.deployment_id = '$ID' GROUP BY e.id) AS per GROUP BY n ORDER BY n) AS shapes")
awk -v a="$START" -v b="$END" 'BEGIN { printf "time to completion: %.1f s\n", b - a }'
awk -v a="$CPU0" -v b="$CPU1" -v t="$TICKS" 'BEGIN { printf "server CPU: %.1f s (user + system)\n", (b - a) / t }'
echo "server peak RSS: $((RSS / 1024)) MiB"
echo "devices succeeded: $SUCCEEDED of $DEVICES; with complete event logs: $COMPLETE ($SHAPES)"
