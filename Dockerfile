# The image the Helm chart runs: both binaries, built without the local
# development stack (`--no-default-features`), on a base with no shell, as
# a non-root user. `charts/build-image` assembles the same image without a
# container daemon, from binaries built on the host.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Statically linked, so the run stage needs no C library.
ENV RUSTFLAGS="-C target-feature=+crt-static"
RUN cargo build --release --locked --no-default-features \
      --target x86_64-unknown-linux-gnu \
      -p ossature-operator -p ossature-control-plane \
 && mkdir -p /out \
 && cp target/x86_64-unknown-linux-gnu/release/ossature-operator \
       target/x86_64-unknown-linux-gnu/release/ossature-control-plane /out/

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ossature-operator"]
