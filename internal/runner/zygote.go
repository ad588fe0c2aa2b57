package runner

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"syscall"

	"github.com/spillway-faas/spillway/internal/lambdawrap"
)

// The script zygote's protocol (see zygote.py): a request is b"ID N\n" and N
// bytes of argument (N = -1: none); an answer is a header line
// b"ID OUTLEN KIND CODE N1 N2 N3\n", OUTLEN bytes of stdout and three fields
// of N1, N2 and N3 bytes; the ready line is b"ready PID VERSION N1 N2 N3\n"
// and three fields.

// errBadFrame says a zygote wrote something that is not its protocol.
var errBadFrame = errors.New("bad frame from the script zygote")

// maxHeader bounds a header line; maxFields the three fields together
// (the shim cuts each text to 4 KiB).
const (
	maxHeader = 256
	maxFields = 64 << 10
)

// pipeBuf is PIPE_BUF: a write to a pipe of at most this many bytes is
// atomic, so the one prepared child that reads it gets it whole.
const pipeBuf = 4096

// zygoteRequest encodes req for a zygote: the script's argument, as the
// shim would make it of the parameter. A request over pipeBuf bytes is a
// header, and its argument (bulk) goes on the argument pipe.
func zygoteRequest(req request) (head, bulk []byte, err error) {
	arg, ok, err := lambdawrap.ScriptArg(req.Param)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		return append(strconv.AppendInt(nil, req.ID, 10), " -1\n"...), nil, nil
	}
	b := make([]byte, 0, min(len(arg), pipeBuf)+32)
	b = strconv.AppendInt(b, req.ID, 10)
	b = append(b, ' ')
	b = strconv.AppendInt(b, int64(len(arg)), 10)
	if len(b)+1+len(arg) > pipeBuf {
		return append(b, " bulk\n"...), []byte(arg), nil
	}
	b = append(b, '\n')
	return append(b, arg...), nil, nil
}

// readHeader reads one header line and splits it into its fields.
func (p *proc) readHeader(want int) ([]string, error) {
	line, err := p.rd.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxHeader {
		return nil, fmt.Errorf("%w: header line over %d bytes", errBadFrame, maxHeader)
	}
	if err != nil {
		return nil, err
	}
	f := strings.Fields(string(line))
	if len(f) != want {
		return nil, fmt.Errorf("%w: header %q", errBadFrame, truncate(string(line), 100))
	}
	return f, nil
}

// readBody reads the bytes that follow a header: out bytes of stdout, then
// the three fields whose sizes are the last three header fields.
func (p *proc) readBody(out int64, sizes []string) (string, [3]string, error) {
	var fields [3]string
	var n [3]int64
	var total int64
	for i, s := range sizes {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil || v < 0 {
			return "", fields, fmt.Errorf("%w: field size %q", errBadFrame, s)
		}
		n[i] = v
		total += v
	}
	if total > maxFields || out < 0 || out > p.maxLine {
		return "", fields, fmt.Errorf("%w: %d bytes of stdout and %d of fields", errBadFrame, out, total)
	}
	buf := make([]byte, out+total)
	if _, err := io.ReadFull(p.rd, buf); err != nil {
		return "", fields, err
	}
	text := string(buf[:out])
	at := out
	for i := range fields {
		fields[i] = string(buf[at : at+n[i]])
		at += n[i]
	}
	return text, fields, nil
}

// readZygoteReady reads a zygote's ready line; a function that does not
// compile is its InitError.
func (p *proc) readZygoteReady() (ready, error) {
	rdy := ready{}
	h, err := p.readHeader(6)
	if err != nil {
		return rdy, err
	}
	if h[0] != "ready" {
		return rdy, fmt.Errorf("%w: ready line %q", errBadFrame, strings.Join(h, " "))
	}
	rdy.Ready = true
	rdy.PID, _ = strconv.Atoi(h[1])
	rdy.Python = h[2]
	_, f, err := p.readBody(0, h[3:])
	if err != nil {
		return rdy, err
	}
	if f[0] != "" {
		rdy.InitError = &pyError{Type: f[0], Message: f[1], Traceback: f[2]}
	}
	return rdy, nil
}

// readZygoteAnswer reads the answer to request id and makes of it what the
// shim answers for the same outcome.
func (p *proc) readZygoteAnswer(id int64) (response, error) {
	var resp response
	h, err := p.readHeader(7)
	if err != nil {
		return resp, err
	}
	rid, err1 := strconv.ParseInt(h[0], 10, 64)
	out, err2 := strconv.ParseInt(h[1], 10, 64)
	code, err3 := strconv.Atoi(h[3])
	if err := errors.Join(err1, err2, err3); err != nil {
		return resp, fmt.Errorf("%w: header %q", errBadFrame, strings.Join(h, " "))
	}
	text, f, err := p.readBody(out, h[4:])
	if err != nil {
		return resp, err
	}
	if rid != id {
		return resp, fmt.Errorf("%w: answer to request %d, want %d", errBadFrame, rid, id)
	}
	resp.ID = &rid
	capBytes := p.maxLine - responseOverhead
	switch kind := h[2]; kind {
	case "ok", "exit":
		if code != 0 && text == "" {
			msg := f[1]
			if kind == "exit" || msg == "" {
				msg = fmt.Sprintf("exit status %d", code)
			}
			resp.Error = &pyError{Type: "SystemExit", Message: msg}
			return resp, nil
		}
		if lambdawrap.JSONStringSize(text) > capBytes {
			resp.TooLarge = true
			resp.Error = &pyError{Type: "ResultTooLarge", Message: tooLargeText(capBytes)}
			return resp, nil
		}
		resp.OK = true
		resp.text = &text
	case "raised":
		resp.Error = &pyError{Type: f[0], Message: f[1], Traceback: f[2]}
	case "signal":
		resp.Crash = true
		resp.Error = &pyError{Type: "Runtime.ExitError",
			Message: "function killed by signal " + signalName(code)}
	case "toolarge":
		resp.TooLarge = true
		resp.Error = &pyError{Type: "ResultTooLarge", Message: tooLargeText(capBytes)}
	default:
		return resp, fmt.Errorf("%w: answer kind %q", errBadFrame, kind)
	}
	return resp, nil
}

func tooLargeText(capBytes int64) string {
	return fmt.Sprintf("result over MAX_RESULT_BYTES (%d bytes)", capBytes)
}

// signalName is Python's name of a signal (signal.Signals(n).name).
func signalName(n int) string {
	names := map[syscall.Signal]string{
		syscall.SIGHUP: "SIGHUP", syscall.SIGINT: "SIGINT", syscall.SIGQUIT: "SIGQUIT",
		syscall.SIGILL: "SIGILL", syscall.SIGTRAP: "SIGTRAP", syscall.SIGABRT: "SIGABRT",
		syscall.SIGBUS: "SIGBUS", syscall.SIGFPE: "SIGFPE", syscall.SIGKILL: "SIGKILL",
		syscall.SIGUSR1: "SIGUSR1", syscall.SIGSEGV: "SIGSEGV", syscall.SIGUSR2: "SIGUSR2",
		syscall.SIGPIPE: "SIGPIPE", syscall.SIGALRM: "SIGALRM", syscall.SIGTERM: "SIGTERM",
		syscall.SIGXCPU: "SIGXCPU", syscall.SIGXFSZ: "SIGXFSZ", syscall.SIGSYS: "SIGSYS",
	}
	if s, ok := names[syscall.Signal(n)]; ok {
		return s
	}
	return strconv.Itoa(n)
}
