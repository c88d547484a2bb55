# syntax=docker/dockerfile:1
#
# varde: one image for every role (coordinator, probe, `varde up`).
#
#   docker build -t varde .
#   docker run --rm -p 9480:9480 -p 9490:9490 varde          # the tour (`varde up`)
#   docker run ... varde coordinator --config /etc/varde ...  # see deploy/README.md
#
# The binary is static (musl): TLS roots are compiled in (rustls +
# webpki-roots), every host name — checks, the probe's push to its
# coordinator, webhooks, SMTP, healthcheck — resolves through hickory
# (reading /etc/resolv.conf and /etc/hosts as Docker writes them; the binary
# does not link getaddrinfo, tests/resolve.rs checks), time zones come from
# chrono-tz, so the runtime image needs no CA bundle, no tzdata and no libc.

# === build ===
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# The native architecture's musl target (x86_64 or aarch64): no cross
# toolchain needed, build on the platform you run.
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src

# Dependencies first, so that a change in src/ does not rebuild them.
# ring and rusqlite (bundled SQLite) compile C: with musl-gcc (CC_<target>).
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && target="$(uname -m)-unknown-linux-musl" \
 && export "CC_$(uname -m)_unknown_linux_musl=musl-gcc" \
 && cargo build --release --locked --target "$target" \
 && rm -rf src

# The real build; then refuse a binary that is not static (`ldd` prints
# no `=>` for one), since the runtime image has no libc to load.
COPY src ./src
RUN target="$(uname -m)-unknown-linux-musl" \
 && export "CC_$(uname -m)_unknown_linux_musl=musl-gcc" \
 && touch src/main.rs src/lib.rs \
 && cargo build --release --locked --target "$target" --bin varde \
 && cp "target/$target/release/varde" /varde \
 && ! ldd /varde 2>/dev/null | grep -q '=>' \
 && /varde --version

# The example config, so that the image runs `varde up` as it comes.
RUN mkdir -p /rootfs/etc/varde /rootfs/var/lib/varde
COPY probes /rootfs/etc/varde/probes
COPY alert-rules /rootfs/etc/varde/alert-rules

# === runtime ===
# distroless/static: /etc/passwd with `nonroot` (65532), no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /varde /usr/local/bin/varde
COPY --from=build --chown=65532:65532 /rootfs/etc/varde /etc/varde
COPY --from=build --chown=65532:65532 /rootfs/var/lib/varde /var/lib/varde
USER 65532:65532
WORKDIR /var/lib/varde
# Config (probes/, alert-rules/, coordinator.toml, token files) and state
# (SQLite store, link key, probe spool).
VOLUME ["/etc/varde", "/var/lib/varde"]
# 9480 coordinator (API, /metrics, /healthz); 9490 probe (/metrics, /probe,
# /healthz); 9499 the demo target of `varde up`.
EXPOSE 9480 9490
# The coordinator's /healthz by default; a probe container sets
# VARDE_HEALTHCHECK_URL=http://127.0.0.1:9490/healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["varde", "healthcheck"]
ENTRYPOINT ["varde"]
CMD ["up", "--config", "/etc/varde", "--data-dir", "/var/lib/varde", \
     "--listen", "0.0.0.0:9480", "--probe-listen", "0.0.0.0:9490"]
