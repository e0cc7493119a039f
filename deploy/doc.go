// Package deploy holds the files of longhaul's Docker Compose deployment
// (../docker-compose.yml, ../Dockerfile): the toxiproxy configuration that
// stands in for the WAN (toxiproxy.json), the script that gives its links
// their latency (toxics.sh) and the assets registered at start
// (assets.jsonl).
//
// It has no code: its tests check, without Docker, that the compose file,
// the Dockerfile and these files agree with each other and with the real
// binary. They build longhaul and read each command's -h, so a command or
// flag renamed in cmd/longhaul fails `go test ./deploy` instead of a user's
// `docker compose up`.
package deploy
