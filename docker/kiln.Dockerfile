# The kiln image (scheduler and API), built FROM the runner image: the scheduler resolves each
# language's toolchain paths and versions on its own filesystem, so it must see exactly what the
# runner pods see. One tag pins both.
#
#   docker build -f docker/runner.Dockerfile -t kiln-runner:0.1.0 .
#   docker build -f docker/kiln.Dockerfile --build-arg RUNNER_IMAGE=kiln-runner:0.1.0 -t kiln:0.1.0 .
#
# The tested path is scripts/images, which builds the same image without Docker or a registry.
# These machines have no container engine, so this file is kept in step with it by review.

ARG RUNNER_IMAGE=kiln-runner:0.1.0

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin kiln

FROM ${RUNNER_IMAGE}
COPY --from=build /src/target/release/kiln /usr/local/bin/kiln
USER 0
RUN mkdir -p /var/lib/kiln && chown 65532:65532 /var/lib/kiln
USER 65532:65532
WORKDIR /var/lib/kiln
ENTRYPOINT ["kiln"]
CMD ["scheduler", "--listen", "0.0.0.0:8081", "--pods", "kubernetes"]
