# A Flotilla node image with nothing in it but the static binary: no base
# image is pulled. Build it with scripts/docker-build.sh, which compiles the
# binary (CGO_ENABLED=0) into ./dist first.
FROM scratch
COPY dist/flotilla /flotilla
COPY dist/flotillactl /flotillactl
EXPOSE 7001 7101 7201 7201/udp 7301
ENTRYPOINT ["/flotilla"]
CMD ["demo"]
