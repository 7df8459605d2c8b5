# Builds every tokenvault binary; the runtime image holds them all and the compose file picks
# the command per service.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --bins \
 && mkdir /out \
 && cp target/release/vault-api target/release/janitor target/release/refresher target/release/vaultctl target/release/tokenvault /out/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 tokenvault
COPY --from=build /out/ /usr/local/bin/
USER tokenvault
ENV TV_LISTEN_ADDR=0.0.0.0:8080
EXPOSE 8080
CMD ["vault-api"]
