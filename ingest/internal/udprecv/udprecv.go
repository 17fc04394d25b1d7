// Package udprecv receives the UDP datagrams of many sockets (an SRS's
// media ports, one per RTP stream) with one goroutine: an epoll set says
// which sockets hold datagrams, and each is read with recvmmsg(2), up to
// a batch in one system call. The sockets are not in Go's network poller,
// which would wake for every datagram too; rounds are paced (Linger) so
// that each read takes what a socket gathered meanwhile.
package udprecv

// MaxDatagram is the largest datagram kept whole: RTP over Ethernet fits
// in 1,500 bytes; a longer one is cut and reported as such.
const MaxDatagram = 2048
