//go:build linux

package udprecv

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Datagram is one datagram a Poller read: its payload (valid only during
// the call that hands it over), its source, and the socket's cookie.
type Datagram struct {
	Socket    any
	Payload   []byte
	From      netip.AddrPort
	Truncated bool // longer than MaxDatagram: cut
}

// Poller reads many UDP sockets with one goroutine: an epoll set says
// which have datagrams, and each is read with recvmmsg(2), up to a batch
// of datagrams in one system call. A goroutine blocked on each socket
// (Receiver) wakes, and makes two system calls, for every datagram when
// each socket carries one RTP stream (50 packets a second); here a wake
// reads every socket that is ready, and a socket is read once per wake.
type Poller struct {
	epfd, evfd int
	fn         func([]Datagram)
	linger     time.Duration
	wake       chan struct{} // ends the pause: a request waits
	mu         sync.Mutex
	socks      map[int32]*psock
	reqs       []preq
	done       chan struct{}
	closed     bool

	// One round's buffers: up to len(hdrs) datagrams before fn is called.
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrAny
	bufs  [][]byte
	out   []Datagram
}

type psock struct {
	fd     int
	cookie any
}

type preq struct {
	fd   int
	stop bool
	done chan struct{}
}

// mmsghdr is struct mmsghdr (x/sys/unix has Msghdr, not it).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// DefaultLinger is the pause between a Poller's rounds: a recorder is not
// in the call's path, and 20 ms (one RTP packet of each stream) lets every
// read take what a socket gathered meanwhile.
const DefaultLinger = 20 * time.Millisecond

// pollBatch is how many datagrams a round holds before they are handed
// over, and perSocket how many one recvmmsg reads.
const (
	pollBatch = 64
	perSocket = 16
)

// NewPoller starts a Poller that hands what it reads to fn, on its own
// goroutine, in order per socket, pausing linger between rounds (0:
// DefaultLinger).
func NewPoller(fn func([]Datagram), linger time.Duration) (*Poller, error) {
	if linger <= 0 {
		linger = DefaultLinger
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("udprecv: epoll: %w", err)
	}
	evfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("udprecv: eventfd: %w", err)
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(evfd)}); err != nil {
		unix.Close(epfd)
		unix.Close(evfd)
		return nil, fmt.Errorf("udprecv: epoll: %w", err)
	}
	p := &Poller{epfd: epfd, evfd: evfd, fn: fn, linger: linger, wake: make(chan struct{}, 1), socks: map[int32]*psock{}, done: make(chan struct{}),
		hdrs: make([]mmsghdr, pollBatch), iovs: make([]unix.Iovec, pollBatch), names: make([]unix.RawSockaddrAny, pollBatch),
		bufs: make([][]byte, pollBatch), out: make([]Datagram, 0, pollBatch)}
	for i := range p.bufs {
		p.bufs[i] = make([]byte, MaxDatagram+1)
	}
	go p.loop()
	return p, nil
}

// Socket is a UDP socket only a Poller reads: it is not in Go's network
// poller, which would otherwise wake for every datagram too.
type Socket struct {
	fd    int
	local netip.AddrPort
}

// Addr is the address the socket is bound to.
func (s *Socket) Addr() netip.AddrPort { return s.local }

// Listen opens a UDP socket on addr with a receive buffer of rcvbuf bytes
// (the kernel caps it at net.core.rmem_max).
func Listen(addr netip.AddrPort, rcvbuf int) (*Socket, error) {
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().Unmap().As4()}
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("udprecv: socket: %w", err)
	}
	if rcvbuf > 0 {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvbuf)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("udprecv: bind %v: %w", addr, err)
	}
	local := addr
	switch b, _ := unix.Getsockname(fd); a := b.(type) {
	case *unix.SockaddrInet4:
		local = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port))
	case *unix.SockaddrInet6:
		local = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port))
	}
	return &Socket{fd: fd, local: local}, nil
}

// Drops is how many datagrams the kernel dropped for this socket because
// its receive buffer was full (SO_MEMINFO's SK_MEMINFO_DROPS): media the
// recorder never saw, which no sequence gap may show (the last packets of
// a stream).
func (s *Socket) Drops() (uint32, error) {
	const skMeminfoDrops, skMeminfoVars = 8, 9
	var info [skMeminfoVars]uint32
	size := uint32(unsafe.Sizeof(info))
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(s.fd), unix.SOL_SOCKET, unix.SO_MEMINFO,
		uintptr(unsafe.Pointer(&info[0])), uintptr(unsafe.Pointer(&size)), 0)
	if errno != 0 {
		return 0, fmt.Errorf("udprecv: SO_MEMINFO: %w", errno)
	}
	if size < (skMeminfoDrops+1)*4 {
		return 0, errors.New("udprecv: SO_MEMINFO without the drops count")
	}
	return info[skMeminfoDrops], nil
}

// Close closes the socket (after Remove, if it was added).
func (s *Socket) Close() error { return unix.Close(s.fd) }

// Add starts reading sock; cookie comes with each of its datagrams.
func (p *Poller) Add(sock *Socket, cookie any) error {
	fd := sock.fd
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("udprecv: poller closed")
	}
	p.socks[int32(fd)] = &psock{fd: fd, cookie: cookie}
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		delete(p.socks, int32(fd))
		return fmt.Errorf("udprecv: epoll: %w", err)
	}
	return nil
}

// Remove stops reading sock once every datagram it holds now has been
// handed over; the caller closes it after.
func (p *Poller) Remove(sock *Socket) {
	p.request(preq{fd: sock.fd, done: make(chan struct{})})
}

// Close stops the poller; sockets still added are not read again.
func (p *Poller) Close() {
	p.request(preq{stop: true, done: make(chan struct{})})
	<-p.done
}

func (p *Poller) request(r preq) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.reqs = append(p.reqs, r)
	p.mu.Unlock()
	var one [8]byte
	one[0] = 1 // host order on little-endian; any non-zero count wakes
	_, _ = unix.Write(p.evfd, one[:])
	select {
	case p.wake <- struct{}{}:
	default:
	}
	select {
	case <-r.done:
	case <-p.done:
	}
}

func (p *Poller) loop() {
	defer close(p.done)
	defer unix.Close(p.epfd)
	defer unix.Close(p.evfd)
	events := make([]unix.EpollEvent, 256)
	pause := time.NewTimer(p.linger)
	defer pause.Stop()
	for {
		// A pause between rounds lets datagrams gather: at 50 packets a
		// second a socket, waking and reading for every one costs more
		// than the datagram. Linger is the most a datagram waits; a
		// Remove or Close ends the pause (a BYE is answered at once).
		select {
		case <-pause.C:
		case <-p.wake:
		}
		pause.Reset(p.linger)
		n, err := unix.EpollWait(p.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == int32(p.evfd) {
				if p.requests() {
					return
				}
				continue
			}
			p.mu.Lock()
			s := p.socks[ev.Fd]
			p.mu.Unlock()
			if s != nil {
				p.read(s, false)
			}
		}
		p.flush()
	}
}

// requests handles Remove and Close; it says whether to stop.
func (p *Poller) requests() bool {
	var b [8]byte
	_, _ = unix.Read(p.evfd, b[:])
	p.mu.Lock()
	reqs := p.reqs
	p.reqs = nil
	p.mu.Unlock()
	for _, r := range reqs {
		if r.stop {
			p.flush()
			p.mu.Lock()
			p.closed = true
			p.mu.Unlock()
			close(r.done)
			return true
		}
		p.mu.Lock()
		s := p.socks[int32(r.fd)]
		delete(p.socks, int32(r.fd))
		p.mu.Unlock()
		if s != nil {
			p.read(s, true) // what it holds, to the last datagram
			p.flush()
			_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, s.fd, nil)
		}
		close(r.done)
	}
	return false
}

// read reads a socket once (up to perSocket datagrams), or until it is
// empty (drain).
func (p *Poller) read(s *psock, drain bool) {
	for {
		free := pollBatch - len(p.out)
		if free == 0 {
			p.flush()
			free = pollBatch
		}
		k := min(free, perSocket)
		base := len(p.out)
		for i := range k {
			j := base + i
			p.iovs[j] = unix.Iovec{Base: &p.bufs[j][0]}
			p.iovs[j].SetLen(len(p.bufs[j]))
			p.hdrs[j] = mmsghdr{hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&p.names[j])), Namelen: unix.SizeofSockaddrAny, Iov: &p.iovs[j]}}
			p.hdrs[j].hdr.SetIovlen(1)
		}
		r, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&p.hdrs[base])), uintptr(k), unix.MSG_DONTWAIT, 0, 0)
		if errno != 0 || r == 0 {
			return // EAGAIN: nothing (more) queued
		}
		for i := range int(r) {
			j := base + i
			n := int(p.hdrs[j].len)
			p.out = append(p.out, Datagram{Socket: s.cookie, Payload: p.bufs[j][:min(n, MaxDatagram)], From: sockaddr(&p.names[j]),
				Truncated: n > MaxDatagram || p.hdrs[j].hdr.Flags&unix.MSG_TRUNC != 0})
		}
		if !drain {
			return // once per wake: level-triggered, it is reported again if it holds more
		}
	}
}

func (p *Poller) flush() {
	if len(p.out) > 0 {
		p.fn(p.out)
		p.out = p.out[:0]
	}
}

func sockaddr(a *unix.RawSockaddrAny) netip.AddrPort {
	switch a.Addr.Family {
	case unix.AF_INET:
		in := (*unix.RawSockaddrInet4)(unsafe.Pointer(a))
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), netPort(&in.Port))
	case unix.AF_INET6:
		in := (*unix.RawSockaddrInet6)(unsafe.Pointer(a))
		return netip.AddrPortFrom(netip.AddrFrom16(in.Addr).Unmap(), netPort(&in.Port))
	}
	return netip.AddrPort{}
}

// netPort reads a port in network byte order, whatever the host's.
func netPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}
