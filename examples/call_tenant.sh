#!/usr/bin/env bash
# Call an edgefleet tenant from the shell, with nothing but bash and the Mosquitto command-line clients.
#
# It exists to show (and test) that docs/protocol.md is enough to write a client in another language:
# it builds an EFT1 request frame byte by byte, publishes it with the MQTT 5 Response Topic and
# Correlation Data properties, waits for the reply on its own reply topic, and decodes the reply frame.
#
# Usage:
#   call_tenant.sh [-h host] [-p port] [-P prefix] [-w timeout_s] [-q qos] TENANT INPUT SHAPE WORD...
#   (host and port default to those of $EDGEFLEET_MQTT_URL, else 127.0.0.1:1883)
#
#   INPUT   the model input's name, e.g. x
#   SHAPE   dimensions joined by 'x', e.g. 1x2 (product must equal the number of WORDs)
#   WORD    one float32 per argument, as its 8 hex digits (IEEE 754, most significant first):
#           3f800000 is 1.0, 40000000 is 2.0, bf800000 is -1.0
#
# Output (one "key: value" per line):
#   kind: result | error
#   header: the reply's JSON header
#   for a result, per tensor:  tensor: NAME DTYPE SHAPE HEX   (HEX = its bytes as sent, little-endian)
#                  and, for float32 tensors, words: NAME WORD... (in the same notation as the input)
#   for an error:  code: CODE  and  message: MESSAGE
# Exit status: 0 for a result, 2 for an error reply, 3 when no reply came in time, 1 for usage errors.
#
# Example: call_tenant.sh -p 1883 demo x 1x2 3f800000 40000000
set -euo pipefail

host=127.0.0.1
port=1883
if [ -n "${EDGEFLEET_MQTT_URL:-}" ]; then  # mqtt://[user[:password]@]host[:port], as every edgefleet command
  url=${EDGEFLEET_MQTT_URL#mqtt://}
  url=${url%/}
  url=${url##*@}
  host=${url%%:*}
  [[ $url == *:* ]] && port=${url##*:}
fi
prefix=ef
timeout_s=5
qos=1
usage() { sed -n '8,25p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 1; }
while getopts "h:p:P:w:q:" opt; do
  case "$opt" in
    h) host=$OPTARG ;;
    p) port=$OPTARG ;;
    P) prefix=$OPTARG ;;
    w) timeout_s=$OPTARG ;;
    q) qos=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 4 ] || usage
tenant=$1 input=$2 shape=$3
shift 3
words=("$@")

[[ $tenant =~ ^[a-z0-9][a-z0-9_-]{0,62}$ ]] || { echo "invalid tenant name: $tenant" >&2; exit 1; }
[[ $input =~ ^[A-Za-z0-9_.:/-]{1,256}$ ]] || { echo "input name must be letters, digits or _.:/-" >&2; exit 1; }
[[ $timeout_s =~ ^[1-9][0-9]*$ ]] || { echo "timeout must be a whole number of seconds" >&2; exit 1; }
[[ $shape =~ ^[0-9]+(x[0-9]+)*$ ]] || { echo "shape must look like 1x2" >&2; exit 1; }
count=1
for d in ${shape//x/ }; do count=$((count * 10#$d)); done
[ "$count" -eq ${#words[@]} ] || { echo "shape $shape needs $count words, got ${#words[@]}" >&2; exit 1; }
for w in "${words[@]}"; do
  [[ $w =~ ^[0-9a-fA-F]{8}$ ]] || { echo "not an 8-hex-digit float32: $w" >&2; exit 1; }
done

work=$(mktemp -d)
sub_pid=
cleanup() {
  if [ -n "$sub_pid" ]; then kill "$sub_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Append raw bytes, given as hex pairs, to a file (bash variables cannot hold NUL bytes, files can).
emit_hex() {  # emit_hex HEX FILE
  local hex=$1 out=$2 esc="" i
  for ((i = 0; i < ${#hex}; i += 2)); do esc+="\\x${hex:i:2}"; done
  printf '%b' "$esc" >>"$out"
}
u32le() {  # the 8 hex digits of a little-endian uint32
  printf '%02x%02x%02x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255))
}

# -- the request frame (protocol.md section 3) ---------------------------------------------------
nbytes=$((count * 4))
dims=${shape//x/,}
header="{\"v\":1,\"kind\":\"request\",\"tensors\":[{\"name\":\"$input\",\"dtype\":\"float32\",\"shape\":[$dims],"
header+="\"offset\":0,\"nbytes\":$nbytes}],\"meta\":{\"timeout_ms\":$((timeout_s * 1000))}}"
hlen=${#header}  # the header is ASCII here, so characters are bytes
frame=$work/request.eft1
printf 'EFT1' >"$frame"
emit_hex "$(u32le "$hlen")" "$frame"
printf '%s' "$header" >>"$frame"
pad=$(((8 - (8 + hlen) % 8) % 8))
for ((i = 0; i < pad; i++)); do emit_hex 00 "$frame"; done
for w in "${words[@]}"; do  # float32 little-endian: the word's bytes in reverse order
  emit_hex "${w:6:2}${w:4:2}${w:2:2}${w:0:2}" "$frame"
done

# -- request/response over MQTT 5 (protocol.md section 2) -----------------------------------------
client=sh-$$-$RANDOM
request_topic=$prefix/v1/tenants/$tenant/infer
reply_topic=$prefix/v1/clients/$client/replies
correlation=$(printf 'corr-%s-%s-%s' "$$" "$RANDOM" "$RANDOM")
replies=$work/replies

# Subscribe first, and only publish once the subscription is live: a probe sent to the reply topic
# comes back when it is.
mosquitto_sub -V mqttv5 -h "$host" -p "$port" -q 1 -i "$client" -t "$reply_topic" \
  -F '%D %P %x' -W $((timeout_s + 5)) >"$replies" 2>/dev/null &
sub_pid=$!
live=
for ((i = 0; i < 100; i++)); do
  mosquitto_pub -V mqttv5 -h "$host" -p "$port" -q 1 -t "$reply_topic" -m probe \
    -D publish correlation-data probe 2>/dev/null || true
  if grep -q '^probe ' "$replies"; then live=1; break; fi
  sleep 0.05
done
[ -n "$live" ] || { echo "could not subscribe to $reply_topic on $host:$port" >&2; exit 3; }

mosquitto_pub -V mqttv5 -h "$host" -p "$port" -q "$qos" -t "$request_topic" -f "$frame" \
  -D publish response-topic "$reply_topic" \
  -D publish correlation-data "$correlation" \
  -D publish content-type application/vnd.edgefleet.tensors.v1 \
  -D publish message-expiry-interval "$timeout_s"

line=
for ((i = 0; i < timeout_s * 50; i++)); do  # replies with other correlation data are not ours
  line=$(grep -m 1 "^$correlation " "$replies" || true)
  [ -n "$line" ] && break
  sleep 0.02
done
[ -n "$line" ] || { echo "no device answered tenant $tenant within $timeout_s s; is it deployed?" >&2; exit 3; }
hex=${line##* }  # the payload is the last field; user properties (ef-status:ok|error) come before it

# -- decode the reply frame ----------------------------------------------------------------------------
[ "${hex:0:8}" = 45465431 ] || { echo "reply is not an EFT1 frame (magic ${hex:0:8})" >&2; exit 1; }
hlen=$((16#${hex:14:2}${hex:12:2}${hex:10:2}${hex:8:2}))
header_hex=${hex:16:hlen*2}
esc=""
for ((i = 0; i < ${#header_hex}; i += 2)); do esc+="\\x${header_hex:i:2}"; done
reply_header=$(printf '%b' "$esc")
start=$((8 + hlen + (8 - (8 + hlen) % 8) % 8))
data=${hex:start*2}
field() {  # the first string value of a JSON key in a compact header: field KEY TEXT
  sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" <<<"$2"
}
kind=$(field kind "$reply_header")
echo "kind: $kind"
echo "header: $reply_header"
if [ "$kind" = error ]; then
  echo "code: $(field code "$reply_header")"
  echo "message: $(field message "$reply_header")"
  exit 2
fi
# One tensor spec per {...} inside "tensors":[...]; keys appear in the order the protocol shows.
specs=$(sed -n 's/.*"tensors":\[\(.*\)\],"meta".*/\1/p' <<<"$reply_header" | sed 's/},{/}\n{/g')
while IFS= read -r spec; do
  [ -n "$spec" ] || continue
  name=$(field name "$spec")
  dtype=$(field dtype "$spec")
  tshape=$(sed -n 's/.*"shape":\(\[[0-9,]*\]\).*/\1/p' <<<"$spec")
  offset=$(sed -n 's/.*"offset":\([0-9]*\).*/\1/p' <<<"$spec")
  size=$(sed -n 's/.*"nbytes":\([0-9]*\).*/\1/p' <<<"$spec")
  bytes=${data:offset*2:size*2}
  echo "tensor: $name $dtype $tshape $bytes"
  if [ "$dtype" = float32 ]; then
    out=""
    for ((i = 0; i < ${#bytes}; i += 8)); do
      b=${bytes:i:8}
      out+=" ${b:6:2}${b:4:2}${b:2:2}${b:0:2}"
    done
    echo "words: $name$out"
  fi
done <<<"$specs"
