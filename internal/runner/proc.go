package runner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spillway-faas/spillway"
)

// proc is one warm Python runner: the shim in worker mode, talking over two
// pipes of its own (fd 3 requests, fd 4 responses). It serves one call at a
// time; whoever holds it (a call, the idle channel, a replacer) owns it.
type proc struct {
	id int
	// zygote says the runner is a script zygote (zygote.py), which speaks
	// length-framed text instead of JSON lines.
	zygote bool
	cmd    *exec.Cmd
	reqW   *os.File
	// bulkW carries the arguments of large requests to a zygote (fd 5); nil
	// for the shim.
	bulkW *os.File
	respR *os.File
	rd    *bufio.Reader
	tail  *tailWriter
	done  chan struct{} // closed when the process has been reaped
	// waitErr is set before done is closed.
	waitErr error
	// fresh is true until the runner served its first call (a cold start).
	fresh bool
	// broken is set by the call that saw the runner die or killed it.
	broken bool
	// maxLine bounds a response line (MaxResultBytes plus the envelope).
	maxLine int64

	releaseOnce sync.Once
}

// ready is the first line a runner writes.
type ready struct {
	Ready     bool     `json:"ready"`
	PID       int      `json:"pid"`
	Python    string   `json:"python"`
	InitError *pyError `json:"initError"`
}

type pyError struct {
	Type      string `json:"type"`
	Message   string `json:"message"`
	Traceback string `json:"traceback"`
}

type request struct {
	ID         int64           `json:"id"`
	Param      json.RawMessage `json:"param"`
	DeadlineMs int64           `json:"deadlineMs,omitempty"`
}

type response struct {
	ID     *int64          `json:"id"`
	OK     bool            `json:"ok"`
	Result json.RawMessage `json:"result"`
	Error  *pyError        `json:"error"`
	Crash  bool            `json:"crash"`
	// TooLarge says the result was over MaxResultBytes and was dropped.
	TooLarge bool `json:"tooLarge"`
	// text is a script's stdout, from a zygote (Result stays empty).
	text *string
}

// startProc starts a runner and waits, within ctx and startTimeout, for its
// ready line. The returned ready carries the function's import error, if any.
//
// The reaper goroutine of the process is counted in wg.
func startProc(ctx context.Context, cfg *Config, id int, wg *sync.WaitGroup) (*proc, ready, error) {
	var rdy ready
	reqR, reqW, err := os.Pipe()
	if err != nil {
		return nil, rdy, fmt.Errorf("start runner %d: request pipe: %w", id, err)
	}
	respR, respW, err := os.Pipe()
	if err != nil {
		reqR.Close()
		reqW.Close()
		return nil, rdy, fmt.Errorf("start runner %d: response pipe: %w", id, err)
	}
	args := []string{cfg.ShimPath, "--worker",
		"--function", cfg.FunctionPath,
		"--style", string(cfg.Style),
		"--handler", cfg.Handler,
		"--name", cfg.Name,
		"--version", cfg.Version,
		"--max-result-bytes", strconv.FormatInt(cfg.MaxResultBytes, 10),
		"--in-fd", "3", "--out-fd", "4"}
	if cfg.ReuseProcess {
		args = append(args, "--reuse-process")
	}
	files := []*os.File{reqR, reqW, respR, respW}
	extra := []*os.File{reqR, respW}
	var bulkR, bulkW *os.File
	if cfg.zygote() {
		// Requests on fd 3, answers on fd 4, as the shim; large arguments
		// on fd 5.
		args = []string{cfg.ZygotePath, cfg.FunctionPath, strconv.Itoa(cfg.Spares),
			strconv.FormatInt(cfg.MaxResultBytes, 10)}
		bulkR, bulkW, err = os.Pipe()
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return nil, rdy, fmt.Errorf("start runner %d: argument pipe: %w", id, err)
		}
		files = append(files, bulkR, bulkW)
		extra = append(extra, bulkR)
	}
	cmd := exec.Command(cfg.Python, args...)
	cmd.Env = cfg.Env
	cmd.Dir = cfg.Dir
	cmd.ExtraFiles = extra
	tail := &tailWriter{w: cfg.Output}
	cmd.Stdout = tail
	cmd.Stderr = tail
	// Its own process group, so a kill reaches a forked script child too;
	// killed with the worker if the worker dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		for _, f := range files {
			f.Close()
		}
		return nil, rdy, fmt.Errorf("start runner %d: %w", id, err)
	}
	for _, f := range extra {
		f.Close()
	}
	p := &proc{id: id, zygote: cfg.zygote(), cmd: cmd, reqW: reqW, bulkW: bulkW, respR: respR, rd: bufio.NewReaderSize(respR, 64<<10),
		tail: tail, done: make(chan struct{}), fresh: true, maxLine: cfg.MaxResultBytes + responseOverhead}
	wg.Go(func() {
		p.waitErr = cmd.Wait()
		close(p.done)
	})

	deadline := time.Now().Add(cfg.StartTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = respR.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = respR.SetReadDeadline(time.Now()) })
	var line []byte
	if p.zygote {
		rdy, err = p.readZygoteReady()
	} else {
		line, err = p.rd.ReadBytes('\n')
	}
	stop()
	_ = respR.SetReadDeadline(time.Time{})
	if errors.Is(err, errBadFrame) {
		p.release()
		return nil, rdy, fmt.Errorf("start runner %d: %w", id, err)
	}
	if err != nil {
		p.release()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if ctx.Err() != nil {
				return nil, rdy, fmt.Errorf("start runner %d: %w", id, ctx.Err())
			}
			return nil, rdy, fmt.Errorf("start runner %d: not ready within %s", id, cfg.StartTimeout)
		}
		return nil, rdy, fmt.Errorf("start runner %d: %s", id, p.exitText())
	}
	if p.zygote {
		return p, rdy, nil
	}
	if err := json.Unmarshal(line, &rdy); err != nil || !rdy.Ready {
		p.release()
		return nil, rdy, fmt.Errorf("start runner %d: bad ready line %q", id, truncate(string(line), 200))
	}
	return p, rdy, nil
}

// call sends one request and reads its response. When ctx ends first the
// runner's process group is killed and the call returns spillway.ErrTimeout
// at once; the caller then owns a broken runner to replace.
func (p *proc) call(ctx context.Context, req request) (response, error) {
	var resp response
	var line, bulk []byte
	var err error
	if p.zygote {
		line, bulk, err = zygoteRequest(req)
	} else {
		line, err = json.Marshal(req)
		line = append(line, '\n')
	}
	if err != nil {
		return resp, fmt.Errorf("encode request: %w", err)
	}
	stop := context.AfterFunc(ctx, func() {
		p.kill()
		now := time.Now()
		_ = p.reqW.SetWriteDeadline(now)
		if p.bulkW != nil {
			_ = p.bulkW.SetWriteDeadline(now)
		}
		_ = p.respR.SetReadDeadline(now)
	})
	_, err = p.reqW.Write(line)
	if err == nil && bulk != nil {
		_, err = p.bulkW.Write(bulk)
	}
	if err == nil && p.zygote {
		resp, err = p.readZygoteAnswer(req.ID)
		if errors.Is(err, errBadFrame) && stop() {
			p.broken = true
			p.kill()
			return resp, fmt.Errorf("runner %d: %w: %w", p.id, err, spillway.ErrRunnerCrashed)
		}
	} else if err == nil {
		line, err = p.readLine()
	}
	if errors.Is(err, errLineTooLong) && stop() {
		// The shim let a result over the cap through; the runner is fine
		// and the rest of the line is already skipped.
		resp.TooLarge = true
		resp.Error = &pyError{Type: "ResultTooLarge", Message: fmt.Sprintf("result over MAX_RESULT_BYTES (%d bytes)", p.maxLine-responseOverhead)}
		return resp, nil
	}
	if !stop() {
		// The deadline fired: the runner is being killed whatever it answered.
		p.broken = true
		if err != nil {
			return resp, fmt.Errorf("call runner %d: %w", p.id, deadlineErr(ctx))
		}
	}
	if err != nil {
		p.broken = true
		fromOutside := p.killedFromOutside()
		p.kill()
		text := p.exitText()
		if fromOutside {
			awaitTeardown(ctx)
		}
		return resp, fmt.Errorf("runner %d %s: %w", p.id, text, spillway.ErrRunnerCrashed)
	}
	if p.zygote {
		return resp, nil
	}
	if err := json.Unmarshal(line, &resp); err != nil {
		p.broken = true
		p.kill()
		return resp, fmt.Errorf("runner %d: bad response %q: %w", p.id, truncate(string(line), 200), spillway.ErrRunnerCrashed)
	}
	if resp.ID == nil || *resp.ID != req.ID {
		p.broken = true
		p.kill()
		return resp, fmt.Errorf("runner %d: response out of order: %w", p.id, spillway.ErrRunnerCrashed)
	}
	return resp, nil
}

// teardownGrace is how long a call whose runner was SIGKILLed by someone else
// holds its answer. Such a kill is most often the whole container going down
// (docker kill, a cgroup OOM kill): the kernel kills its processes in no set
// order, so the worker can outlive its runner by a moment. Answering at once
// would report a function crash for a call that the caller may safely re-run
// elsewhere; holding it lets the worker's own death reach the caller instead.
const teardownGrace = 300 * time.Millisecond

// killedFromOutside reports whether the runner has already ended by a SIGKILL
// that this worker did not send (every kill of ours comes after this check).
func (p *proc) killedFromOutside() bool {
	select {
	case <-p.done:
	case <-time.After(50 * time.Millisecond):
		return false // still running: it closed its pipe, it was not killed
	}
	var exit *exec.ExitError
	if !errors.As(p.waitErr, &exit) {
		return false
	}
	ws, ok := exit.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// awaitTeardown waits teardownGrace, or less when ctx ends.
func awaitTeardown(ctx context.Context) {
	t := time.NewTimer(teardownGrace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// responseOverhead is what a response line holds besides the result.
const responseOverhead = 64 << 10

// errLineTooLong says a response line was over maxLine; it was read to its
// end and dropped.
var errLineTooLong = errors.New("response line too long")

// readLine reads one response line, at most maxLine bytes of it kept.
func (p *proc) readLine() ([]byte, error) {
	var line []byte
	over := false
	for {
		chunk, err := p.rd.ReadSlice('\n')
		if !over {
			if p.maxLine > 0 && int64(len(line)+len(chunk)) > p.maxLine {
				over, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		switch {
		case err == nil && over:
			return nil, errLineTooLong
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

// deadlineErr says why ctx ended: its deadline is a timeout, a cancel is not.
func deadlineErr(ctx context.Context) error {
	if errors.Is(context.Cause(ctx), context.Canceled) {
		return context.Canceled
	}
	return spillway.ErrTimeout
}

// kill sends SIGKILL to the runner's process group.
func (p *proc) kill() {
	if p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// exitText describes how the runner ended, waiting briefly for it to be reaped,
// with the last line it wrote on stderr.
func (p *proc) exitText() string {
	var status string
	select {
	case <-p.done:
		status = "exited"
		if p.waitErr != nil {
			status = "exited: " + p.waitErr.Error()
		}
	case <-time.After(500 * time.Millisecond):
		status = "stopped answering"
	}
	if last := p.tail.lastLine(); last != "" {
		status += " (" + last + ")"
	}
	return status
}

// release kills the runner, waits for it to be reaped and closes the pipes.
func (p *proc) release() {
	p.releaseOnce.Do(func() {
		p.kill()
		<-p.done
		p.reqW.Close()
		if p.bulkW != nil {
			p.bulkW.Close()
		}
		p.respR.Close()
	})
}

// tailWriter passes a runner's stdout/stderr through and keeps its end.
type tailWriter struct {
	w io.Writer

	mu  sync.Mutex // guards buf
	buf []byte
}

const tailSize = 2048

func (t *tailWriter) Write(b []byte) (int, error) {
	t.mu.Lock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > tailSize {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-tailSize:]...)
	}
	t.mu.Unlock()
	if t.w != nil {
		_, _ = t.w.Write(b)
	}
	return len(b), nil
}

func (t *tailWriter) lastLine() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(bytes.TrimRight(t.buf, "\n")))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return truncate(s, 300)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
