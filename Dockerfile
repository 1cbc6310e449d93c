# syntax=docker/dockerfile:1
# One image, three binaries: scaler (the default entrypoint; `scaler janitor`
# runs the pool controller), agent and dashboard. Built with the same make
# target as a developer uses: `make binaries`. test/deploy checks this file.

# ---- build ------------------------------------------------------------------
# Base images are pulled by digest (the tag is for people; test/deploy checks
# it): `docker buildx imagetools inspect <image:tag>` gives the current one.
FROM golang:1.26-bookworm@sha256:a688600ca24f8a4d3ca77f95b0dd40704a9fc787c826660eb7ba0b641b8b175d AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN make binaries

# ---- run --------------------------------------------------------------------
# Static binaries on distroless: no shell, no package manager, CA certificates
# and tzdata for rediss:// and TZ. The agent's builtin executor needs nothing
# else; an agent image running a real tool (terraform, …) adds it on top.
FROM gcr.io/distroless/static-debian12:nonroot@sha256:d093aa3e30dbadd3efe1310db061a14da60299baff8450a17fe0ccc514a16639
COPY --from=build /src/bin/scaler /src/bin/agent /src/bin/slotscaler-supervisor /src/bin/dashboard /usr/local/bin/
# distroless's nonroot user, numeric so runAsNonRoot can verify it.
USER 65532:65532
# scaler: 9090 gRPC (KEDA), 9091 gRPC health, 8081 metrics.
# dashboard: 8080 pages and API, 8082 metrics. agent: 8082 health and metrics.
EXPOSE 8080 8081 8082 9090 9091
ENTRYPOINT ["/usr/local/bin/scaler"]
