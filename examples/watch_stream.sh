#!/usr/bin/env bash
# Feed a stream tenant from the shell and watch its results and events, with nothing but bash and the
# Mosquitto command-line clients (docs/protocol.md section 8).
#
# A camera is played by mosquitto_pub publishing an image file (JPEG or PNG) to the tenant's source
# topic, with the frame's sequence number and capture time as MQTT 5 user properties; the results and
# events are read with a plain mosquitto_sub. Deploy the tenant first, for example:
#
#   edgefleet deploy cam-doorbell --model face-detect --source cams/door/frames --fps 15 --slo-ms 100 \
#       --event 'someone:face_score_max>=0.7/0.5'
#
# Usage:
#   watch_stream.sh [-h host] [-p port] [-P prefix] [-n frames] [-f fps] [-w seconds] TENANT SOURCE IMAGE
#
# Output: one line per message, "TOPIC PAYLOAD" (results and events are JSON for models with a catalog
# decoder, such as face-detect). With -n 0 it only watches (and first prints the retained latest result).
# Example: watch_stream.sh -n 30 -f 10 cam-doorbell cams/door/frames models/samples/grace_hopper_256.jpg
set -euo pipefail

host=127.0.0.1
port=1883
prefix=ef
frames=10
fps=5
wait_s=2
while getopts "h:p:P:n:f:w:" opt; do
  case $opt in
    h) host=$OPTARG ;;
    p) port=$OPTARG ;;
    P) prefix=$OPTARG ;;
    n) frames=$OPTARG ;;
    f) fps=$OPTARG ;;
    w) wait_s=$OPTARG ;;
    *) sed -n 2,18p "$0"; exit 1 ;;
  esac
done
shift $((OPTIND - 1))
if [ $# -ne 3 ]; then sed -n 2,18p "$0"; exit 1; fi
tenant=$1 source=$2 image=$3

# the watcher: exactly what an app in any language would subscribe to
mosquitto_sub -V mqttv5 -h "$host" -p "$port" -v \
  -t "$prefix/v1/tenants/$tenant/results" -t "$prefix/v1/tenants/$tenant/events" &
watcher=$!
trap 'kill $watcher 2>/dev/null || true' EXIT
sleep 0.5

# the camera: one frame every 1/fps seconds, each with its seq and capture time
for ((seq = 0; seq < frames; seq++)); do
  mosquitto_pub -V mqttv5 -h "$host" -p "$port" -t "$source" -f "$image" \
    -D publish user-property seq "$seq" -D publish user-property ts "$(date +%s.%N)"
  sleep "$(awk -v f="$fps" 'BEGIN { printf "%.3f", 1 / f }')"
done
sleep "$wait_s"
