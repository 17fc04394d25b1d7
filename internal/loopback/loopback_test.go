package loopback

import "testing"

func TestLoopback(t *testing.T) {
	for hp, want := range map[string]bool{"127.0.0.1:9000": true, "127.1.2.3:1": true, "[::1]:19000": true, "localhost:8200": true,
		"10.0.0.1:9000": false, "vault:8200": false, "[2001:db8::1]:1": false, "127.0.0.1": false, "": false} {
		if got := HostPort(hp); got != want {
			t.Errorf("%q: %v, want %v", hp, got, want)
		}
	}
}
