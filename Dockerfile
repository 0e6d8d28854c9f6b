# flotilla-server in a container. Build stage: Swift toolchain + the -dev libraries;
# runtime stage: Debian slim with only the shared libraries it links (the Swift runtime
# is linked statically). The database comes from DATABASE_URL (see docker-compose.yml).
FROM swift:6.1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
        libnghttp2-dev libpq-dev libssl-dev libcurl4-openssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product flotilla-server --static-swift-stdlib

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
        libnghttp2-14 libpq5 libssl3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /var/lib/flotilla --create-home flotilla
COPY --from=build /src/.build/release/flotilla-server /usr/local/bin/flotilla-server
COPY migrations /usr/share/flotilla/migrations
USER flotilla
ENV FLOTILLA_LISTEN=0.0.0.0:8080 FLOTILLA_DATA_DIR=/var/lib/flotilla FLOTILLA_MIGRATIONS=/usr/share/flotilla/migrations
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/flotilla-server"]
