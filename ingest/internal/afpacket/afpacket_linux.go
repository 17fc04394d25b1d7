// Package afpacket captures frames from a network interface with a Linux
// AF_PACKET socket: no libpcap, no cgo. Frames come with their arrival
// time; the kernel's drop counter is read with PACKET_STATISTICS.
package afpacket

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"golang.org/x/sys/unix"
)

// ErrTimeout is returned by ZeroCopyReadPacketData when no frame arrived
// within the read timeout, so the caller can look at its context.
var ErrTimeout = errors.New("afpacket: no frame yet")

// Config configures a capture.
type Config struct {
	// Interface to capture on, e.g. "eth1" (a mirror port) or "lo".
	Interface string
	// Filter is a classic BPF program in `tcpdump -ddd` form (a count line,
	// then "code jt jf k" per instruction); empty captures everything.
	Filter string
	// ReadTimeout bounds one read; default 200 ms.
	ReadTimeout time.Duration
	// BufferBytes is the socket receive buffer; default 32 MiB.
	BufferBytes int
}

// Stats are the kernel's counters since the capture opened.
type Stats struct {
	Packets uint64 // frames the socket received
	Drops   uint64 // frames the kernel dropped: the buffer was full
}

// Handle is an open capture. Not safe for concurrent use.
type Handle struct {
	fd       int
	loopback bool
	buf      []byte
	stats    Stats
}

// Open starts capturing on cfg.Interface.
func Open(cfg Config) (*Handle, error) {
	ifi, err := net.InterfaceByName(cfg.Interface)
	if err != nil {
		return nil, fmt.Errorf("afpacket: %w", err)
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 200 * time.Millisecond
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = 32 << 20
	}
	proto := htons(unix.ETH_P_ALL)
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, fmt.Errorf("afpacket: socket (needs CAP_NET_RAW): %w", err)
	}
	h := &Handle{fd: fd, loopback: ifi.Flags&net.FlagLoopback != 0, buf: make([]byte, 65536)}
	fail := func(what string, err error) (*Handle, error) {
		unix.Close(fd)
		return nil, fmt.Errorf("afpacket: %s: %w", what, err)
	}
	if cfg.Filter != "" {
		prog, err := ParseFilter(cfg.Filter)
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}); err != nil {
			return fail("attach filter", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		return fail("bind", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.BufferBytes) // root
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.BufferBytes)
	tv := unix.NsecToTimeval(cfg.ReadTimeout.Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return fail("read timeout", err)
	}
	// Read and clear the counters, so Stats counts from here.
	_, _ = unix.GetsockoptTpacketStats(fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	return h, nil
}

// ZeroCopyReadPacketData returns the next frame (valid until the next
// call) and its arrival time, or ErrTimeout. On loopback, each frame is
// seen leaving and arriving: only the arrival is returned.
func (h *Handle) ZeroCopyReadPacketData() ([]byte, gopacket.CaptureInfo, error) {
	for {
		n, from, err := unix.Recvfrom(h.fd, h.buf, 0)
		now := time.Now()
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				return nil, gopacket.CaptureInfo{}, ErrTimeout
			}
			return nil, gopacket.CaptureInfo{}, fmt.Errorf("afpacket: read: %w", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && h.loopback && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return h.buf[:n], gopacket.CaptureInfo{Timestamp: now, CaptureLength: n, Length: n}, nil
	}
}

// Stats reads the kernel's counters.
func (h *Handle) Stats() (Stats, error) {
	s, err := unix.GetsockoptTpacketStats(h.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return h.stats, fmt.Errorf("afpacket: statistics: %w", err)
	}
	h.stats.Packets += uint64(s.Packets)
	h.stats.Drops += uint64(s.Drops)
	return h.stats, nil
}

// Close stops the capture.
func (h *Handle) Close() error { return unix.Close(h.fd) }

// ParseFilter reads a classic BPF program in `tcpdump -ddd` form.
func ParseFilter(s string) ([]unix.SockFilter, error) {
	fields := strings.Fields(s)
	if len(fields) == 0 {
		return nil, errors.New("afpacket: empty filter")
	}
	n, err := strconv.Atoi(fields[0])
	if err != nil || n <= 0 || n > 4096 || len(fields) != 1+4*n {
		return nil, fmt.Errorf("afpacket: filter: want `tcpdump -ddd` output (a count, then 4 numbers per instruction)")
	}
	prog := make([]unix.SockFilter, n)
	for i := range prog {
		var v [4]uint64
		for j := range v {
			if v[j], err = strconv.ParseUint(fields[1+4*i+j], 10, 32); err != nil {
				return nil, fmt.Errorf("afpacket: filter instruction %d: %w", i, err)
			}
		}
		if v[0] > 0xffff || v[1] > 0xff || v[2] > 0xff {
			return nil, fmt.Errorf("afpacket: filter instruction %d out of range", i)
		}
		prog[i] = unix.SockFilter{Code: uint16(v[0]), Jt: uint8(v[1]), Jf: uint8(v[2]), K: uint32(v[3])}
	}
	return prog, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
