package ingest

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

// Local says which parties are the organisation's own: a SIP domain
// (example.com, and its subdomains) or a network (10.0.0.0/8) that a
// party's URI host or signalling address is in. A call is inbound when
// only the callee is local, outbound when only the caller is, internal
// when both are; unspecified when neither is, or when Local is empty.
type Local struct {
	domains  []string
	prefixes []netip.Prefix
}

// ParseLocal reads "example.com,10.0.0.0/8,192.0.2.7": domains, networks
// and addresses, comma separated. Empty: nothing is local.
func ParseLocal(s string) (Local, error) {
	var l Local
	for _, v := range strings.Split(s, ",") {
		v = strings.ToLower(strings.TrimSpace(v))
		switch {
		case v == "":
		case strings.Contains(v, "/"):
			p, err := netip.ParsePrefix(v)
			if err != nil {
				return Local{}, fmt.Errorf("ingest: local network %q: %w", v, err)
			}
			l.prefixes = append(l.prefixes, p.Masked())
		default:
			if a, err := netip.ParseAddr(v); err == nil {
				l.prefixes = append(l.prefixes, netip.PrefixFrom(a, a.BitLen()))
				continue
			}
			if len(v) > 253 || strings.ContainsAny(v, " @:;") {
				return Local{}, fmt.Errorf("ingest: local domain %q: a host name, network or address", v)
			}
			l.domains = append(l.domains, strings.TrimPrefix(v, "."))
		}
	}
	return l, nil
}

// Empty says whether nothing is local.
func (l Local) Empty() bool { return len(l.domains) == 0 && len(l.prefixes) == 0 }

// Direction is a call's direction from its caller's and callee's URIs and
// signalling addresses.
func (l Local) Direction(callerURI string, caller netip.AddrPort, calleeURI string, callee netip.AddrPort) verbatimv1.Direction {
	if l.Empty() {
		return verbatimv1.Direction_DIRECTION_UNSPECIFIED
	}
	from, to := l.local(callerURI, caller), l.local(calleeURI, callee)
	switch {
	case from && to:
		return verbatimv1.Direction_DIRECTION_INTERNAL
	case from:
		return verbatimv1.Direction_DIRECTION_OUTBOUND
	case to:
		return verbatimv1.Direction_DIRECTION_INBOUND
	}
	return verbatimv1.Direction_DIRECTION_UNSPECIFIED
}

func (l Local) local(uri string, addr netip.AddrPort) bool {
	if addr.IsValid() && l.inNetwork(addr.Addr()) {
		return true
	}
	host := uriHost(uri)
	if host == "" {
		return false
	}
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return l.inNetwork(a)
	}
	for _, d := range l.domains {
		if host == d || strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}

func (l Local) inNetwork(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range l.prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// uriHost is the host of a SIP URI ("sip:alice@example.com:5060;transport=tcp"
// gives example.com), lower case; empty when there is none.
func uriHost(uri string) string {
	uri = strings.TrimSpace(uri)
	if i := strings.IndexByte(uri, ':'); i >= 0 && !strings.HasPrefix(uri, "[") {
		uri = uri[i+1:]
	}
	if i := strings.LastIndexByte(uri, '@'); i >= 0 {
		uri = uri[i+1:]
	}
	if i := strings.IndexAny(uri, ";?>"); i >= 0 {
		uri = uri[:i]
	}
	if strings.HasPrefix(uri, "[") {
		if i := strings.IndexByte(uri, ']'); i >= 0 {
			return strings.ToLower(uri[:i+1])
		}
		return ""
	}
	if i := strings.IndexByte(uri, ':'); i >= 0 {
		uri = uri[:i]
	}
	return strings.ToLower(uri)
}
