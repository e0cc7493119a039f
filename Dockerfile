# syntax=docker/dockerfile:1
#
# The one longhaul binary in a small image: built static in a Go image, run
# from distroless (no shell, no package manager) as a non-root user.
#
#   docker build -t longhaul:dev --build-arg VERSION=$(git describe --always --dirty) .
#   docker run --rm longhaul:dev longhaul version
#
# docker-compose.yml builds it as longhaul:dev; deploy/image_test.go checks
# that this file, go.mod and the compose file agree (Go version, binary path,
# user, volume).

# The Go version follows the go directive of go.mod.
FROM golang:1.26-bookworm AS build
WORKDIR /src
# Modules first: their layer survives changes to the source.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/root/.cache/go-build \
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
		-o /out/usr/local/bin/longhaul ./cmd/longhaul \
	&& mkdir -p /out/var/lib/longhaul

# static: no libc needed (CGO_ENABLED=0); nonroot: uid and gid 65532.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/usr/local/bin/longhaul /usr/local/bin/longhaul
# The edge's write-ahead log lives here (--data-dir /var/lib/longhaul/wal). A
# named volume mounted on it takes this directory's owner when first used,
# so the non-root user can write to it.
COPY --from=build --chown=65532:65532 /out/var/lib/longhaul /var/lib/longhaul
USER 65532:65532
VOLUME ["/var/lib/longhaul"]
# edge gRPC, HTTP; primary gRPC, HTTP; scheduler HTTP; checker HTTP; gossip.
EXPOSE 7300 7301 7400 7401 7500 7600 7946/tcp 7946/udp
# No entrypoint: a container runs `longhaul <command> [flags]`, as the
# compose file's commands do; the binary is on PATH.
CMD ["longhaul", "help"]
