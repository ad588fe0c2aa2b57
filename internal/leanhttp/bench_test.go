package leanhttp

import (
	"bufio"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"testing"
)

// BenchmarkServe: keep-alive XML-RPC-sized POSTs on loopback, 16 callers
// with a connection each, against the short path and against net/http's server with the same
// handler. The caller is a bare one (a prepared request, a bufio reader),
// so the difference between the two is the server's.
func BenchmarkServe(b *testing.B) {
	answer := []byte("<?xml version=\"1.0\"?><methodResponse><params><param><value><string>x</string></value></param></params></methodResponse>")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/xml")
		w.Write(answer)
	})
	body := "<?xml version=\"1.0\"?><methodCall><methodName>call_faas</methodName><params><param><value><string>x</string></value></param></params></methodCall>"
	request := []byte("POST /RPC2 HTTP/1.1\r\nHost: lb\r\nUser-Agent: bench\r\nContent-Type: text/xml\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	servers := []struct {
		name  string
		serve func(net.Listener) (stop func())
	}{
		{"lean", func(ln net.Listener) func() {
			s := &Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}
			go s.Serve(ln)
			return func() { s.Close() }
		}},
		{"net-http", func(ln net.Listener) func() {
			s := &http.Server{Handler: h, ErrorLog: log.New(io.Discard, "", 0)}
			go s.Serve(ln)
			return func() { s.Close() }
		}},
	}
	for _, srv := range servers {
		b.Run(srv.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer srv.serve(ln)()
			b.ReportAllocs()
			b.SetParallelism(8) // 16 callers on 2 CPUs, as lb's benchmark has
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				for pb.Next() {
					if _, err := c.Write(request); err != nil {
						b.Error(err)
						return
					}
					resp, err := http.ReadResponse(br, nil)
					if err == nil {
						_, err = io.Copy(io.Discard, resp.Body)
					}
					if err == nil && resp.StatusCode != http.StatusOK {
						err = errors.New(resp.Status)
					}
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
