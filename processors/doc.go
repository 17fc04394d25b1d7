// Package processors holds the exactly-once stream processors: media
// assembly (RTP to WAV/Ogg, sealed into object storage), key rotation and
// rewrap, retention, legal hold and erasure. Each consumes and produces in
// Kafka transactions; side effects outside Kafka use deterministic ids.
//
// Run is media assembly (`verbatim process`); README.md explains how it
// records each call exactly once while calls are still open.
package processors
