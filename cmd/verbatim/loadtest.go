package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/verbatimrec/verbatim/loadtest"
)

// runLoadtest writes a synthetic capture of concurrent calls, to run the
// whole pipeline at scale: ingest pcap, process, project.
func runLoadtest(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: verbatim loadtest [flags] -o load.pcap\n\nWrites a capture of --calls concurrent G.711 calls talking for --duration,\nas a mirror port would see them; ingest it with `verbatim ingest pcap`.")
		fs.PrintDefaults()
	}
	out := fs.String("o", "", "capture file to write (required)")
	calls := fs.Int("calls", 5000, "concurrent calls (1 to 65536)")
	dur := fs.Duration("duration", 10*time.Second, "how long every call talks")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return errors.New("loadtest: -o is required, and takes no arguments")
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".loadtest-*")
	if err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	defer os.Remove(tmp.Name())
	start := time.Now()
	// Starting now: each capture's calls are new calls, not the last
	// one's again.
	st, err := loadtest.WritePcap(tmp, loadtest.Config{Calls: *calls, Duration: *dur, Start: time.Now().UTC().Truncate(time.Second)})
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), *out)
	}
	if err != nil {
		return fmt.Errorf("loadtest: %w", err)
	}
	fmt.Fprintf(stdout, "%s: %d calls, %d RTP packets (%d per second), %d SIP messages, %.1f MB, written in %v\n",
		*out, st.Calls, st.RTPPackets, int64(float64(st.RTPPackets)/dur.Seconds()), st.SIPMessages, float64(st.Bytes)/1e6, time.Since(start).Round(time.Millisecond))
	return nil
}
