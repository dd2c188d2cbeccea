# Herald in a container: a release build on the Rust image, run on Debian slim as a non-root
# user with its data in a volume. `docker compose up` (docker-compose.yml) uses it.
#   docker build -t herald .
#   docker run -p 127.0.0.1:8080:8080 -v herald-data:/var/lib/herald herald
# The first start prints the admin token: docker logs <container> | grep 'Admin token'.

FROM rust:1.95-slim-bookworm AS build
# The commit for `herald --version` (.git is not sent to the builder):
#   docker build --build-arg HERALD_BUILD_COMMIT=$(git rev-parse --short=12 HEAD) .
ARG HERALD_BUILD_COMMIT=unknown
ENV HERALD_BUILD_COMMIT=${HERALD_BUILD_COMMIT}
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p herald \
    && install -m 0755 -s target/release/herald /usr/local/bin/herald

FROM debian:bookworm-slim
# ca-certificates: Herald verifies providers' TLS against the system trust store.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --home-dir /var/lib/herald \
        --no-create-home --shell /usr/sbin/nologin herald \
    && install -d -o herald -g herald -m 0700 /var/lib/herald
COPY --from=build /usr/local/bin/herald /usr/bin/herald
# Every interface inside the container (publish the port to choose who reaches it); the
# SQLite store and master.key in the volume. Postgres: set HERALD_DATABASE_URL and
# HERALD_MASTER_KEY (docker-compose.yml, profile `cluster`).
ENV HERALD_LISTEN=0.0.0.0:8080 \
    HERALD_DATA_DIR=/var/lib/herald
USER herald
WORKDIR /var/lib/herald
VOLUME /var/lib/herald
EXPOSE 8080
# `herald healthcheck` asks /readyz at HERALD_LISTEN (on loopback): no curl in the image.
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 \
    CMD ["/usr/bin/herald", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/herald"]
CMD ["serve"]
