# seedq binaries (CPU backend) for docker-compose.yml's consumer service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p seedq-consumer -p seedq-producer \
 && cp target/release/seedq-consumer target/release/seedq-producer /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/seedq-consumer /usr/local/bin/seedq-producer /usr/local/bin/
COPY config /etc/seedq
ENTRYPOINT []
CMD ["seedq-consumer", "--config", "/etc/seedq/local.toml"]
