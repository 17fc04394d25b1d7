// Package loadtest will hold the synthetic call generator and the
// end-to-end benchmark (target: 5,000 concurrent G.711 calls on one 2-core
// machine). Until the capture path exists, per-component benchmarks live
// next to their code (go test -bench ./...).
package loadtest
