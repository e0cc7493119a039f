#!/bin/sh
# Puts the WAN's latency on toxiproxy's links to the primary: for each
# "proxy=rtt_ms" in $LINKS, half the round trip on the upstream and half on
# the downstream direction (a latency toxic delays one direction only).
#
# It replaces toxics of the same name, so running it again (every
# `docker compose up` does) sets the same latency, or a new one:
#
#   LINKS="wan-eu=10 wan-us=150" TOXIPROXY_URL=http://127.0.0.1:8474 sh deploy/toxics.sh
#
# Needs sh and curl; docker-compose.yml runs it in the curl image.
set -eu

api=${TOXIPROXY_URL:-http://toxiproxy:8474}
: "${LINKS:?set LINKS to proxy=rtt_ms pairs, e.g. LINKS='wan-eu=10 wan-us=150'}"

for link in $LINKS; do
	proxy=${link%%=*}
	rtt=${link#*=}
	case $rtt in
	'' | *[!0-9]*)
		echo "toxics: $link: want proxy=round-trip milliseconds" >&2
		exit 2
		;;
	esac
	half=$((rtt / 2))
	for stream in upstream downstream; do
		name=wan-latency-$stream
		# 404 when it is not there yet: fine.
		curl -sS -o /dev/null -X DELETE "$api/proxies/$proxy/toxics/$name"
		curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' \
			-d "{\"name\":\"$name\",\"type\":\"latency\",\"stream\":\"$stream\",\"toxicity\":1,\"attributes\":{\"latency\":$half,\"jitter\":0}}" \
			"$api/proxies/$proxy/toxics"
	done
	echo "toxics: $proxy: ${rtt} ms round trip (${half} ms each way)"
done
