# syntax=docker/dockerfile:1
# redbridge in a small non-root image: the release binary on distroless (glibc, CA
# certificates, nothing else; no shell).
#   docker build -t registry.example.com/redbridge:0.1.0 .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# The protobuf is compiled by the build script with protox: no system protoc is needed.
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY scaler scaler
# Release profile without debug info and symbols: the image carries only what runs.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin redbridge \
    && install -D -m 0755 target/release/redbridge /out/redbridge

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/redbridge /usr/local/bin/redbridge
# 65532 is distroless's nonroot; deploy/base runs it with the same id.
USER 65532:65532
EXPOSE 9090 8080
ENTRYPOINT ["/usr/local/bin/redbridge"]
CMD ["serve", "--config", "/etc/redbridge/config/pools.yaml"]
