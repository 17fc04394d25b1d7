// Package loadtest holds the synthetic call generator and the capture-path
// benchmark at scale (the target: 5,000 concurrent G.711 calls recorded on
// one 2-core machine with the whole stack on it).
//
// WritePcap writes a capture of N concurrent calls as a mirror port would
// see them (`verbatim loadtest` writes one to a file, for the whole
// pipeline); BenchmarkIngest runs the capture path over it and reports
// nanoseconds, allocations and bytes per packet, and heap per open call.
package loadtest
