package sipdialog_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/verbatimrec/verbatim/ingest/internal/sipdialog"
	"github.com/verbatimrec/verbatim/internal/stacktest"
)

// rfc4475 gives the verdict RFC 4475 assigns each torture message, as a
// passive tracker applies it: "accept" (the message is valid, or its
// problem is for the transaction or application layer: §3.1.1, §3.2,
// §3.3, §3.4) or "reject" (invalid syntax, §3.1.2: an element must not act
// on it). baddate (§3.1.2.12) may be either: an element that ignores the
// Date header may process it, and the tracker does.
var rfc4475 = map[string]string{
	// §3.1.1 valid, if unusual
	"wsinv": "accept", "intmeth": "accept", "esc01": "accept", "escnull": "accept", "esc02": "accept",
	"lwsdisp": "accept", "longreq": "accept", "dblreq": "accept", "semiuri": "accept", "transports": "accept",
	"mpart01": "accept", "unreason": "accept", "noreason": "accept",
	// §3.1.2 invalid
	"badinv01": "reject", "clerr": "reject", "ncl": "reject", "scalar02": "reject", "scalarlg": "reject",
	"quotbal": "reject", "ltgtruri": "reject", "lwsruri": "reject", "lwsstart": "reject", "trws": "reject",
	"escruri": "reject", "baddate": "accept", "regbadct": "reject", "badaspec": "reject", "baddn": "reject",
	"badvers": "reject", "mismatch01": "reject", "mismatch02": "reject", "bigcode": "reject",
	// §3.2 transaction layer
	"badbranch": "accept",
	// §3.3 application layer: valid syntax; insuf lacks required headers
	"insuf": "reject", "unkscm": "accept", "unksm2": "accept", "bext01": "accept", "invut": "accept",
	"regaut01": "accept", "multi01": "accept", "mcl01": "accept", "bcast": "accept", "zeromf": "accept",
	"cparam01": "accept", "cparam02": "accept", "regescrt": "accept", "sdp01": "accept",
	// novelsc is valid (a URI scheme with "."), but sipgo's URI parser
	// refuses it: the tracker reports it malformed. Known divergence.
	"novelsc": "reject (sipgo)",
	// §3.4 backward compatibility
	"inv2543": "accept",
}

// TestRFC4475 runs every torture message through the tracker: none
// crashes it, and each gets its verdict, with a reason when rejected.
func TestRFC4475(t *testing.T) {
	dir := stacktest.SharedTestdata(t, "rfc4475")
	files, err := filepath.Glob(filepath.Join(dir, "*.dat"))
	if err != nil || len(files) != 50 {
		t.Fatalf("%d torture messages (%v), want 50", len(files), err)
	}
	seen := 0
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".dat")
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tr := sipdialog.NewTracker(func(sipdialog.Event) {})
		herr := tr.Handle(time.Unix(0, 0), netip.MustParseAddrPort("192.0.2.1:5060"), b)
		want, ok := rfc4475[name]
		if !ok {
			if name == "test" { // sipsorcery's own, not in RFC 4475
				continue
			}
			t.Errorf("%s: no verdict listed", name)
			continue
		}
		seen++
		switch {
		case strings.HasPrefix(want, "accept") && herr != nil:
			t.Errorf("%s: RFC 4475 says valid, got %v", name, herr)
		case strings.HasPrefix(want, "reject") && !errors.Is(herr, sipdialog.ErrMalformed):
			t.Errorf("%s: RFC 4475 says invalid, got %v", name, herr)
		case herr != nil:
			t.Logf("%-10s rejected: %v", name, herr)
		}
	}
	if seen != 49 {
		t.Fatalf("%d RFC messages checked, want 49", seen)
	}
}
