// Package processors holds the exactly-once stream processors: media
// assembly (RTP to WAV/Ogg, sealed into object storage), key rotation and
// rewrap, retention, legal hold and erasure. Each consumes and produces in
// Kafka transactions; side effects outside Kafka use deterministic ids.
//
// Media assembly lands with the end-to-end recording work (issue 3).
package processors
