package netguard

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"
)

// serve runs an HTTP server on a guarded loopback listener.
func serve(t *testing.T, deny ...netip.Prefix) (*Listener, string) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Wrap(inner, nil)
	if deny != nil {
		l.Deny(deny)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return l, "http://" + inner.Addr().String() + "/"
}

func get(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// TestListenerRefusesDeniedSources: a peer in a denied prefix gets its
// connection closed with no answer, and the refusal is counted. The
// protection-off variants (nothing denied, or another prefix denied) serve
// the same peer.
func TestListenerRefusesDeniedSources(t *testing.T) {
	loop := netip.MustParsePrefix("127.0.0.0/8")
	t.Run("denied", func(t *testing.T) {
		l, url := serve(t, loop)
		for i := range 3 {
			if body, err := get(url); err == nil {
				t.Fatalf("request %d from a denied source answered %q", i, body)
			}
		}
		if n := l.Refused(); n < 3 {
			t.Errorf("Refused() = %d, want at least 3", n)
		}
	})
	t.Run("protection off: nothing denied", func(t *testing.T) {
		l, url := serve(t)
		if body, err := get(url); err != nil || body != "ok" {
			t.Fatalf("get = %q, %v", body, err)
		}
		if n := l.Refused(); n != 0 {
			t.Errorf("Refused() = %d, want 0", n)
		}
	})
	t.Run("other prefix denied", func(t *testing.T) {
		_, url := serve(t, netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("fd00::/8"))
		if body, err := get(url); err != nil || body != "ok" {
			t.Fatalf("get = %q, %v", body, err)
		}
	})
	t.Run("deny after start", func(t *testing.T) {
		l, url := serve(t)
		if _, err := get(url); err != nil {
			t.Fatal(err)
		}
		l.Deny([]netip.Prefix{loop})
		if body, err := get(url); err == nil {
			t.Fatalf("answered %q after Deny", body)
		}
	})
}

func TestDeniedAddr(t *testing.T) {
	l := Wrap(nil, nil)
	l.Deny([]netip.Prefix{netip.MustParsePrefix("172.18.0.0/16"), netip.MustParsePrefix("fd00:1::/64")})
	for addr, want := range map[string]bool{
		"172.18.0.5:4000":       true,
		"[::ffff:172.18.3.4]:1": true,
		"[fd00:1::7]:80":        true,
		"172.19.0.5:4000":       false,
		"127.0.0.1:5":           false,
		"not an address":        false,
		"[fd00:2::1]:80":        false,
	} {
		if got := l.DeniedAddr(addr); got != want {
			t.Errorf("DeniedAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}
