# Verbatim's single binary, with every codec: G.729 through Debian's
# libbcg729 (GPL-3.0, linked statically: the image's binary is conveyed
# under the GPL-3.0; see LICENSE and README.md). docker-compose.yml builds it.
FROM golang:1.26-bookworm AS build
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libbcg729-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static, for the distroless image: Go's own DNS resolver and user lookup
# (netgo, osusergo), libbcg729.a linked in.
RUN CGO_ENABLED=1 go build -trimpath -tags 'bcg729 netgo osusergo' \
	-ldflags '-linkmode external -extldflags "-static"' -o /out/verbatim ./cmd/verbatim

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/verbatim /usr/local/bin/verbatim
ENTRYPOINT ["/usr/local/bin/verbatim"]
