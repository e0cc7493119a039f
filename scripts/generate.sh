#!/usr/bin/env bash
# Regenerates the Go code and OpenAPI document of api/ from the .proto files.
# protoc comes from the system (apt-get install protobuf-compiler); every
# plugin is pinned in go.mod as a tool dependency, so the output is the same
# on every machine with the same protoc.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "generate: protoc missing: apt-get install -y protobuf-compiler" >&2; exit 1; }
out=${1:-api}
plugin() { echo "--plugin=$1=$(go tool -n "$1")"; }
protoc -I api -I /usr/include \
  "$(plugin protoc-gen-go)" "$(plugin protoc-gen-go-grpc)" \
  "$(plugin protoc-gen-grpc-gateway)" "$(plugin protoc-gen-openapiv2)" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  --grpc-gateway_out="$out" --grpc-gateway_opt=paths=source_relative \
  --grpc-gateway_opt=grpc_api_configuration=api/longhaul/v1/ingest_http.yaml \
  --openapiv2_out="$out" \
  --openapiv2_opt=grpc_api_configuration=api/longhaul/v1/ingest_http.yaml \
  --openapiv2_opt=json_names_for_fields=false,allow_merge=true,merge_file_name=longhaul \
  api/longhaul/v1/*.proto
