// Package ingest is Verbatim's capture layer: SIP and SDP dialog tracking,
// RTP/SRTP demultiplexing and batching, pcap (offline and live), the
// SIPREC server and the CTI metadata API. It turns traffic into the events
// of package schemas, sealing media and personal data with each call's data
// key before anything reaches Kafka. Nothing imports ingest.
//
// The capture roles land with the end-to-end recording work (issue 3).
package ingest
