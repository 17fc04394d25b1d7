# Verbatim's single binary. docker-compose.yml builds it.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/verbatim ./cmd/verbatim

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/verbatim /usr/local/bin/verbatim
ENTRYPOINT ["/usr/local/bin/verbatim"]
