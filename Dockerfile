# The rlhf image for deploy/k8s (and any container runtime): Debian 12, packages from
# apt only, two stages.
#   docker build -t registry.example.com/rlhf:0.1.0 .
#   (podman/buildah/kaniko read the same file)
# build:   the toolchain and -dev packages (scripts/deps.sh's list), the release build of
#          the binaries, and the list of Debian packages their shared libraries come from.
# runtime: those runtime packages only, the binaries in /opt/rlhf/bin, a non-root user.

FROM debian:12 AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
# The package list first, so that the apt layer is cached across source changes.
COPY scripts/deps.sh scripts/deps.sh
RUN bash -c 'source scripts/deps.sh && apt-get update -qq && \
      apt-get install -y -qq --no-install-recommends "${RLHF_PACKAGES[@]}"' && \
    rm -rf /var/lib/apt/lists/*
COPY . .
RUN RLHF_BUILD_DIR=/build scripts/build.sh rlhf rlhf-learner rlhf-actor \
      rlhf-reward-server rlhf-reference-server && \
    mkdir -p /opt/rlhf/bin && \
    cp /build/bin/rlhf /build/bin/rlhf-learner /build/bin/rlhf-actor \
       /build/bin/rlhf-reward-server /build/bin/rlhf-reference-server /opt/rlhf/bin/ && \
    strip --strip-unneeded /opt/rlhf/bin/* && \
    # The Debian packages that own every shared library the binaries load.
    # (dpkg knows a library by the path its package installed: /lib/... or /usr/lib/...)
    ldd /opt/rlhf/bin/* | awk '/=> \// {print $3}' | sort -u | \
      while read -r f; do echo "$f"; realpath "$f"; done | sort -u | \
      { xargs -r dpkg -S 2>/dev/null || true; } | cut -d: -f1 | sort -u \
      > /opt/rlhf/runtime-packages.txt && \
    cat /opt/rlhf/runtime-packages.txt

FROM debian:12 AS runtime
ENV DEBIAN_FRONTEND=noninteractive
COPY --from=build /opt/rlhf/runtime-packages.txt /opt/rlhf/runtime-packages.txt
# libopenblas0-*: the BLAS that LibTorch loads at run time (design.md section 5).
RUN apt-get update -qq && \
    apt-get install -y -qq --no-install-recommends ca-certificates \
      libopenblas0-pthread libopenblas0-openmp $(cat /opt/rlhf/runtime-packages.txt) && \
    rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/rlhf/bin /opt/rlhf/bin
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin rlhf && \
    mkdir -p /var/lib/rlhf && chown rlhf:rlhf /var/lib/rlhf
USER 10001
ENV PATH=/opt/rlhf/bin:$PATH
WORKDIR /var/lib/rlhf
# gRPC and /metrics, as deploy/k8s uses them.
EXPOSE 50051 9090
ENTRYPOINT []
CMD ["rlhf", "--help"]
