package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/verbatimrec/verbatim/ingest/internal/afpacket"
	"github.com/verbatimrec/verbatim/ingest/internal/pcapread"
)

// LiveConfig says where to capture.
type LiveConfig struct {
	// Interface, e.g. a mirror (SPAN) port. Required.
	Interface string
	// Filter is a classic BPF program in `tcpdump -ddd` form, applied in
	// the kernel; empty captures everything (ingest skips what is not
	// SIP or media).
	Filter string
	// Ready, if set, is called once the capture socket is open.
	Ready func()
}

// Live records the calls seen on a network interface until ctx ends, then
// ends the calls still open (reason: capture ended) and returns once
// everything captured is produced. It uses an AF_PACKET socket (Linux,
// CAP_NET_RAW; no libpcap). Report.KernelDrops counts frames the kernel
// dropped because the recorder fell behind.
func Live(ctx context.Context, cfg Config, lc LiveConfig) (Report, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return Report{}, err
	}
	ifi, err := net.InterfaceByName(lc.Interface)
	if err != nil {
		return Report{}, fmt.Errorf("ingest: %w", err)
	}
	h, err := afpacket.Open(afpacket.Config{Interface: lc.Interface, Filter: lc.Filter})
	if err != nil {
		return Report{}, err
	}
	defer h.Close()
	link := layers.LinkTypeEthernet // loopback too: Linux gives it an Ethernet header
	if len(ifi.HardwareAddr) == 0 && ifi.Flags&net.FlagLoopback == 0 {
		link = layers.LinkTypeRaw // tun and other point-to-point links
	}
	rd, err := pcapread.NewReader(liveSource{h}, link)
	if err != nil {
		return Report{}, err
	}
	if lc.Ready != nil {
		lc.Ready()
	}
	return run(ctx, cfg, rd, func() (uint64, error) {
		s, err := h.Stats()
		return s.Drops, err
	})
}

type liveSource struct{ h *afpacket.Handle }

func (s liveSource) ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	b, ci, err := s.h.ZeroCopyReadPacketData()
	if errors.Is(err, afpacket.ErrTimeout) {
		err = pcapread.ErrNoPacket
	}
	return b, ci, err
}
