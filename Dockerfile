# The image the Helm chart runs: both binaries, built without the local
# development stack (`--no-default-features`), on an empty base with no
# shell, as a non-root user. `charts/build-image` assembles the same image
# without a container daemon, from binaries built on the host.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Statically linked, so the image needs no C library.
ENV RUSTFLAGS="-C target-feature=+crt-static"
RUN cargo build --release --locked --no-default-features \
      --target x86_64-unknown-linux-gnu \
      -p ossature-operator -p ossature-control-plane \
 && mkdir -p /out/usr/local/bin /out/etc/ssl/certs /out/tmp \
 && cp target/x86_64-unknown-linux-gnu/release/ossature-operator \
       target/x86_64-unknown-linux-gnu/release/ossature-control-plane /out/usr/local/bin/ \
 && cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >/out/etc/passwd \
 && chmod 1777 /out/tmp

FROM scratch
COPY --from=build /out/ /
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/ossature-operator"]
