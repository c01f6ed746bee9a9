# The keyward image where a registry is reachable: `docker build -t ghcr.io/keyward/keyward:0.1.0 .`
# (scripts/image.sh assembles the same image without pulling anything).
# Build stage: the release binary from the locked dependency set.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin keyward

# Runtime: distroless cc (glibc, libgcc, CA certificates, a nonroot user 65532), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="keyward" \
      org.opencontainers.image.description="Headless-CMS API keys as code: reference CMS key service, GitOps CLI and Kubernetes operator" \
      org.opencontainers.image.source="https://github.com/keyward/keyward" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/keyward /usr/local/bin/keyward
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/keyward"]
