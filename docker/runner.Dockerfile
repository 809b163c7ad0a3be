# The runner image: kiln-runner and the language toolchains. Runner pods run `kiln-runner standby`
# as uid 65534 with a read-only root filesystem; jobs arrive through `kiln-runner exec`.
#
#   docker build -f docker/runner.Dockerfile -t kiln-runner:0.1.0 .
#
# The tested path is scripts/images, which builds the same image without Docker or a registry
# (debootstrap and buildah): both run docker/runner-setup.sh on docker/runner-packages.txt, with
# the same user, work dir, environment and entrypoint. These machines have no container engine,
# so this file is kept in step with that script by review (docs/kubernetes.md).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kiln-runner

FROM debian:bookworm-slim
# The toolchains of config/languages.toml the image carries: add a language's packages to
# docker/runner-packages.txt and its entry there.
COPY docker/runner-packages.txt docker/runner-setup.sh /tmp/kiln/
RUN bash /tmp/kiln/runner-setup.sh packages /tmp/kiln/runner-packages.txt && rm -rf /tmp/kiln
# Go's standard library, built once here as `kiln serve` builds it once per host (warm_cache).
COPY config/languages.toml docker/runner-setup.sh /tmp/kiln/
RUN bash /tmp/kiln/runner-setup.sh warm /tmp/kiln/languages.toml && rm -rf /tmp/kiln
COPY --from=build /src/target/release/kiln-runner /usr/local/bin/kiln-runner
# Nothing here runs as root; the work dir is the pod's emptyDir.
USER 65534:65534
WORKDIR /work
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/work TMPDIR=/work
ENTRYPOINT ["kiln-runner"]
CMD ["standby"]
