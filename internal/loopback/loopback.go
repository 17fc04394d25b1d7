// Package loopback says whether an address is this machine's loopback:
// the one place where plain text or an unauthenticated endpoint may be
// allowed without an explicit flag.
package loopback

import "net"

// Host reports a host name or IP address of the loopback ("localhost",
// 127.0.0.0/8, ::1).
func Host(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// HostPort reports a host:port whose host is the loopback; one that does
// not parse is not.
func HostPort(hp string) bool {
	h, _, err := net.SplitHostPort(hp)
	return err == nil && Host(h)
}
