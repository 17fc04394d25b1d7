package ingest

import (
	"net/netip"
	"testing"

	"github.com/verbatimrec/verbatim/schemas/verbatimv1"
)

func TestDirection(t *testing.T) {
	l, err := ParseLocal("bank.example, 10.0.0.0/8 ,192.0.2.7")
	if err != nil {
		t.Fatal(err)
	}
	none := netip.AddrPort{}
	ext := netip.MustParseAddrPort("198.51.100.1:5060")
	for _, c := range []struct {
		from     string
		fromAddr netip.AddrPort
		to       string
		toAddr   netip.AddrPort
		want     verbatimv1.Direction
	}{
		{"sip:alice@carrier.example", ext, "sip:desk@bank.example", ext, verbatimv1.Direction_DIRECTION_INBOUND},
		{"sip:desk@trading.bank.example:5061;transport=tls", ext, "sip:+441234@carrier.example", ext, verbatimv1.Direction_DIRECTION_OUTBOUND},
		{"sip:a@x.example", netip.MustParseAddrPort("10.1.2.3:5060"), "sips:b@[2001:db8::1]", none, verbatimv1.Direction_DIRECTION_OUTBOUND},
		{"sip:a@192.0.2.7", none, "tel:+44", netip.MustParseAddrPort("[::ffff:10.0.0.1]:5060"), verbatimv1.Direction_DIRECTION_INTERNAL},
		{"sip:a@notbank.example", ext, "sip:b@bank.example.evil", ext, verbatimv1.Direction_DIRECTION_UNSPECIFIED},
	} {
		if got := l.Direction(c.from, c.fromAddr, c.to, c.toAddr); got != c.want {
			t.Errorf("%s -> %s: %v, want %v", c.from, c.to, got, c.want)
		}
	}
	if got := (Local{}).Direction("sip:a@bank.example", none, "sip:b@bank.example", none); got != verbatimv1.Direction_DIRECTION_UNSPECIFIED {
		t.Errorf("nothing local: %v", got)
	}
	for _, bad := range []string{"10.0.0.0/33", "a@b", "host name"} {
		if _, err := ParseLocal(bad); err == nil {
			t.Errorf("ParseLocal(%q) accepted", bad)
		}
	}
}
