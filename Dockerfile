# syntax=docker/dockerfile:1
# Build: a statically linked binary (glibc, +crt-static: the one name it resolves, REDIS_URL's
# host, it resolves itself from /etc/hosts and resolv.conf, so no NSS is needed), the same way
# tests/static/run.sh builds and checks it.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
ENV RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols"
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu --bin pubsub \
    && cp target/x86_64-unknown-linux-gnu/release/pubsub /pubsub

# Run: nothing but the binary. No shell, no libc files, no /etc.
FROM scratch
COPY --from=build /pubsub /pubsub
USER 65532:65532
ENV HOST=0.0.0.0 PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=2s --retries=3 CMD ["/pubsub", "--healthcheck"]
ENTRYPOINT ["/pubsub"]
