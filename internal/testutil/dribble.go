package testutil

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// HeaderDribble sends a request's headers to addr a line a second, as a slow
// client would, and reports how long the server kept the connection open
// (capped at max). It may run in a goroutine of the test: a failed dial is
// reported with t.Errorf and gives 0.
func HeaderDribble(t testing.TB, addr string, max time.Duration) time.Duration {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Errorf("dribble headers to %s: %v", addr, err)
		return 0
	}
	defer c.Close()
	start := time.Now()
	closed := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, c) // returns when the server closes
		close(closed)
	}()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: spillway\r\n"); err != nil {
		return time.Since(start)
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-closed:
			return time.Since(start)
		case <-tick.C:
		}
		if time.Since(start) > max {
			return max
		}
		if _, err := fmt.Fprintf(c, "X-Dribble-%d: x\r\n", i); err != nil {
			return time.Since(start)
		}
	}
}
