# The runner image: kiln-runner and the language toolchains. Runner pods run `kiln-runner standby`
# as uid 65534 with a read-only root filesystem; jobs arrive through `kiln-runner exec`.
#
#   docker build -f docker/runner.Dockerfile -t kiln-runner:0.1.0 .
#
# These machines have no container engine: the file is kept correct by review (docs/kubernetes.md).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kiln-runner

FROM debian:bookworm-slim
# The toolchains of config/languages.toml; add a language's packages here and its entry there.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates python3 gcc g++ libc6-dev nodejs openjdk-17-jdk-headless golang-go rustc bash \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kiln-runner /usr/local/bin/kiln-runner
# Nothing here runs as root; the work dir is the pod's emptyDir.
USER 65534:65534
WORKDIR /work
ENV HOME=/work TMPDIR=/work
CMD ["kiln-runner", "standby"]
