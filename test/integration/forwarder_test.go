package integration

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// forwardEnv, when set to "LISTEN TARGET", makes the test binary a bare
// HTTP/1.1 forwarder instead of running tests (see TestMain): the floor
// that BenchmarkLBOverhead sets beside lb. Per call it reads a request's
// head and Content-Length body, writes those bytes to one of 4 kept
// connections to the worker, reads the answer the same way and writes it
// back: the reads and writes any proxy makes, with none of lb's work
// (no XML-RPC, no routing, no pool, no metrics).
const forwardEnv = "SPILLWAY_BENCH_FORWARD"

func forwarderMain(spec string) {
	listen, target, ok := strings.Cut(spec, " ")
	if !ok {
		fmt.Fprintf(os.Stderr, "%s=%q: want \"LISTEN TARGET\"\n", forwardEnv, spec)
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "forwarder: %v\n", err)
		os.Exit(1)
	}
	workers := make(chan *bufio.ReadWriter, 4)
	for range cap(workers) {
		c, err := net.DialTimeout("tcp", target, 5*time.Second)
		if err != nil {
			fmt.Fprintf(os.Stderr, "forwarder: dial %s: %v\n", target, err)
			os.Exit(1)
		}
		workers <- bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Fprintf(os.Stderr, "forwarder: %v\n", err)
			os.Exit(1)
		}
		go forwardConn(c, workers)
	}
}

func forwardConn(c net.Conn, workers chan *bufio.ReadWriter) {
	defer c.Close()
	in := bufio.NewReader(c)
	var msg []byte
	for {
		var err error
		if msg, err = readHTTPMessage(in, msg[:0]); err != nil {
			return
		}
		w := <-workers
		_, err = w.Write(msg)
		if err == nil {
			err = w.Flush()
		}
		if err == nil {
			msg, err = readHTTPMessage(w.Reader, msg[:0])
		}
		workers <- w
		if err != nil {
			fmt.Fprintf(os.Stderr, "forwarder: worker: %v\n", err)
			return
		}
		if _, err := c.Write(msg); err != nil {
			return
		}
	}
}

// readHTTPMessage appends one message with a Content-Length body to buf.
func readHTTPMessage(r *bufio.Reader, buf []byte) ([]byte, error) {
	length := -1
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return buf, err
		}
		buf = append(buf, line...)
		if len(line) <= 2 {
			break
		}
		if name, value, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(name), "Content-Length") {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(value))); err != nil {
				return buf, fmt.Errorf("content-length %q: %w", value, err)
			}
		}
	}
	if length < 0 {
		return buf, errors.New("no content-length")
	}
	n := len(buf)
	buf = append(buf, make([]byte, length)...)
	_, err := io.ReadFull(r, buf[n:])
	return buf, err
}
