// Command client talks to a Spillway lb: one call, an interactive prompt,
// the lb's status, and a load generator with a latency report.
//
//	client call [-v] [--fn NAME] PARAM
//	client repl [--fn NAME]
//	client status [--json]
//	client functions [--json]
//	client bench [-c CONC] [-n COUNT | -d DURATION] [--rate RPS] [--param P]
//	             [--warmup N|DURATION] [--json] [--out FILE.png] [--compare] [--fn NAME]
//
// The target is --lb URL, else LB_URL, else
// http://127.0.0.1:$LOAD_BALANCER_PORT/ (8000 by default). LB_AUTH_TOKEN,
// when set, is sent as a bearer token. Without --fn calls go to the lb's
// default function through call_faas, as the reference client's do; --fn
// NAME calls the function NAME through call(NAME, param).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/spillway-faas/spillway"
	"github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/loadgen"
	"github.com/spillway-faas/spillway/internal/xmlrpc"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &env{
		stdin:     os.Stdin,
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		lookup:    os.LookupEnv,
		stdinTTY:  term.IsTerminal(int(os.Stdin.Fd())),
		stderrTTY: term.IsTerminal(int(os.Stderr.Fd())),
	}
	os.Exit(run(ctx, os.Args[1:], env))
}

// env is what a command reads and writes; tests supply their own.
type env struct {
	stdin     io.Reader
	stdout    io.Writer
	stderr    io.Writer
	lookup    config.Lookup // the environment
	stdinTTY  bool          // prompt in repl
	stderrTTY bool          // progress bar in bench
}

const usage = `usage: client COMMAND [flags]

commands:
  call PARAM    call the function once and print its result (-v: route, worker, reason, duration, cold start)
  repl          read a parameter per line, call the function, print the result
  status        print the lb's pool and counters, and a line per function
  functions     list the functions the lb serves and their settings
  bench         load the lb and report throughput and latency (client bench -h for flags)

call, repl and bench call the lb's default function (call_faas), or with --fn NAME the function NAME.

The target is --lb URL, else $LB_URL, else http://127.0.0.1:$LOAD_BALANCER_PORT/ (port 8000 by default).
--lb and LB_URL take a comma-separated list of lb replicas: the client moves to
the next only when a connection is refused, so a call is never sent twice.
$LB_AUTH_TOKEN, when set, is sent as a bearer token.
`

// Exit codes.
const (
	exitOK    = 0
	exitFail  = 1 // the call or run failed
	exitUsage = 2
)

func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "call":
		err = cmdCall(ctx, args[1:], e)
	case "repl":
		err = cmdRepl(ctx, args[1:], e)
	case "status":
		err = cmdStatus(ctx, args[1:], e)
	case "functions":
		err = cmdFunctions(ctx, args[1:], e)
	case "bench":
		err = cmdBench(ctx, args[1:], e)
	case "-h", "--help", "help":
		fmt.Fprint(e.stdout, usage)
		return exitOK
	default:
		fmt.Fprintf(e.stderr, "client: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		if !ue.printed {
			fmt.Fprintf(e.stderr, "client %s: %v\n", args[0], err)
		}
		return exitUsage
	default:
		fmt.Fprintf(e.stderr, "client %s: %v\n", args[0], describe(err))
		return exitFail
	}
}

// usageError is a mistake on the command line (exit 2); printed is set
// when the flag package has already said so.
type usageError struct {
	msg     string
	printed bool
}

func (u usageError) Error() string { return u.msg }

func usagef(format string, args ...any) error { return usageError{msg: fmt.Sprintf(format, args...)} }

// describe names a fault's code for people: "fault -32000 timeout: ...",
// or "fault -32010: no such function: x" when the fault's text already
// starts with its name.
func describe(err error) string {
	var f *xmlrpc.Fault
	if !errors.As(err, &f) {
		return err.Error()
	}
	key := fmt.Sprint(f.Code)
	name := strings.TrimPrefix(loadgen.ErrorKeyName(key), key+" ")
	msg := fmt.Sprintf("fault %s %s: %s", key, name, f.String)
	if strings.HasPrefix(strings.ToLower(f.String), name) {
		msg = fmt.Sprintf("fault %s: %s", key, f.String)
	}
	if f.Code == spillway.FaultNoSuchFunction {
		msg += " (client functions lists the functions the lb serves)"
	}
	return msg
}

// common holds the flags every command takes.
type common struct {
	lb      string
	timeout time.Duration
	fn      string // --fn, for the commands that call the function
	dfltFn  string // FAAS_FUNCTION_NAME, set by client: the function a one-function lb is taken to serve
}

func (c *common) register(fs *flag.FlagSet, timeout time.Duration) {
	fs.StringVar(&c.lb, "lb", "", "lb URL, or a comma-separated list of lb replicas (default $LB_URL, else http://127.0.0.1:$LOAD_BALANCER_PORT/)")
	fs.DurationVar(&c.timeout, "timeout", timeout, "deadline of each call")
}

// registerFn adds --fn, for the commands that call the function.
func (c *common) registerFn(fs *flag.FlagSet) {
	fs.StringVar(&c.fn, "fn", "", "call the function `NAME`, by call(NAME, param) or invoke's function option (default: the lb's default function, by call_faas and invoke(param))")
}

// function resolves --fn against the lb (see loadgen.ResolveFunction): the
// name to call, "" for the lb's default function through call_faas.
func (c *common) function(ctx context.Context, cl *xmlrpc.Client, target string) (string, error) {
	name, err := loadgen.ResolveFunction(ctx, cl, c.fn, c.dfltFn)
	if errors.Is(err, loadgen.ErrOneFunction) {
		return "", fmt.Errorf("--fn %s: %s serves one function only (it has no functions method: an lb from before many functions, or the reference gateway), taken to be %q (FAAS_FUNCTION_NAME): run without --fn to call it", c.fn, target, c.dfltFn)
	}
	if err != nil {
		return "", fmt.Errorf("--fn %s: %w", c.fn, err)
	}
	return name, nil
}

func (c *common) client(e *env, conns int) (*xmlrpc.Client, string, error) {
	cfg, err := config.LoadClient(e.lookup)
	if err != nil {
		return nil, "", usageError{msg: err.Error()}
	}
	c.dfltFn = cfg.FunctionName
	targets, err := loadgen.Targets(c.lb, cfg.URL())
	if err != nil {
		return nil, "", usageError{msg: err.Error()}
	}
	tr := xmlrpc.NewTransport()
	if conns > tr.MaxIdleConnsPerHost {
		tr.MaxIdleConnsPerHost = conns
	}
	var rt http.RoundTripper = tr
	if len(targets) > 1 {
		// Several lb replicas: move to the next only when one refuses the
		// connection, so no call is ever sent twice.
		if rt, err = loadgen.NewFailover(targets, tr); err != nil {
			return nil, "", usageError{msg: err.Error()}
		}
	}
	target := strings.Join(targets, ",")
	cl := xmlrpc.NewClient(targets[0], &http.Client{Transport: rt})
	if cfg.AuthToken != "" {
		cl.SetBearerToken(cfg.AuthToken)
	}
	return cl, target, nil
}

// parse parses flags given before or after the positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{msg: err.Error(), printed: true}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func newFlagSet(name, synopsis string, e *env) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: client %s\n\nflags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// paramValue turns the command-line parameter into the value sent: a string
// (as the reference client sends it), or JSON when asked.
func paramValue(p string, asJSON bool) (any, error) {
	if !asJSON {
		return p, nil
	}
	d := json.NewDecoder(strings.NewReader(p))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, usagef("--param-json: %v", err)
	}
	return jsonToXMLRPC(v), nil
}

// jsonToXMLRPC converts decoded JSON into values the encoder takes.
func jsonToXMLRPC(v any) any {
	switch x := v.(type) {
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n
		}
		f, _ := x.Float64()
		return f
	case []any:
		for i := range x {
			x[i] = jsonToXMLRPC(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = jsonToXMLRPC(x[k])
		}
	}
	return v
}

func cmdCall(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("call", "call [-v] [--fn NAME] [--param-json] [--lb URL] [--timeout D] PARAM", e)
	var c common
	c.register(fs, 2*time.Minute)
	c.registerFn(fs)
	verbose := fs.Bool("v", false, "also print route, worker, reason, duration and cold start (uses invoke)")
	asJSON := fs.Bool("param-json", false, "PARAM is JSON (default: sent as a string)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return usagef("want exactly one PARAM, got %d", len(pos))
	}
	param, err := paramValue(pos[0], *asJSON)
	if err != nil {
		return err
	}
	cl, target, err := c.client(e, 1)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	fn, err := c.function(ctx, cl, target)
	if err != nil {
		return err
	}
	if !*verbose {
		res, err := loadgen.Call(ctx, cl, fn, param)
		if err != nil {
			return err
		}
		return printResult(e.stdout, res)
	}
	invokeArgs := []any{param}
	if fn != "" {
		invokeArgs = append(invokeArgs, map[string]any{"function": fn})
	}
	var reply any
	start := time.Now()
	if err := cl.Call(ctx, "invoke", invokeArgs, &reply); err != nil {
		return err
	}
	rtt := time.Since(start)
	inv, err := loadgen.ParseInvocation(reply)
	if err != nil {
		return err
	}
	if err := printResult(e.stdout, inv.Result); err != nil {
		return err
	}
	reason := string(inv.Reason)
	if reason == "" {
		reason = "-"
	}
	worker := inv.Worker
	if worker == "" {
		worker = "-"
	}
	cold := "no"
	if inv.ColdStart {
		cold = "yes"
	}
	// lb says which function ran (since many functions); an older one
	// ran its only one.
	if m, _ := reply.(map[string]any); m != nil {
		if name, ok := m["function"].(string); ok && name != "" {
			fmt.Fprintf(e.stdout, "function    %s\n", name)
		}
	}
	_, err = fmt.Fprintf(e.stdout, "route       %s\nworker      %s\nreason      %s\nduration    %.2f ms (round trip %.2f ms)\ncold start  %s\n",
		inv.Route, worker, reason, float64(inv.Duration)/float64(time.Millisecond), float64(rtt)/float64(time.Millisecond), cold)
	return err
}

// printResult prints a string result as is (with a final newline) and
// anything else as an indented listing.
func printResult(w io.Writer, v any) error {
	if s, ok := v.(string); ok {
		if !strings.HasSuffix(s, "\n") {
			s += "\n"
		}
		_, err := io.WriteString(w, s)
		return err
	}
	return render(w, v)
}

func cmdRepl(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("repl", "repl [--fn NAME] [--lb URL] [--timeout D]", e)
	var c common
	c.register(fs, 2*time.Minute)
	c.registerFn(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("repl takes no arguments")
	}
	cl, target, err := c.client(e, 1)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, c.timeout)
	fn, err := c.function(rctx, cl, target)
	cancel()
	if err != nil {
		return err
	}
	if e.stdinTTY {
		what := target
		if c.fn != "" {
			what = c.fn + " at " + target
		}
		fmt.Fprintf(e.stdout, "calling %s; one parameter per line, an empty line or Ctrl-D ends\n", what)
	}
	sc := bufio.NewScanner(e.stdin)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for {
		if e.stdinTTY {
			fmt.Fprint(e.stdout, "param> ")
		}
		if !sc.Scan() {
			break
		}
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" {
			if e.stdinTTY {
				break
			}
			continue
		}
		if line == "exit" || line == "quit" {
			break
		}
		cctx, cancel := context.WithTimeout(ctx, c.timeout)
		res, err := loadgen.Call(cctx, cl, fn, line)
		cancel()
		if err != nil {
			fmt.Fprintf(e.stdout, "error: %s\n", describe(err))
		} else if err := printResult(e.stdout, res); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read input: %w", err)
	}
	return nil
}

func cmdStatus(ctx context.Context, args []string, e *env) error {
	fs := newFlagSet("status", "status [--json] [--lb URL] [--timeout D]", e)
	var c common
	c.register(fs, 10*time.Second)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usagef("status takes no arguments")
	}
	cl, target, err := c.client(e, 1)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var st any
	if err := cl.Call(ctx, "status", nil, &st); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	fmt.Fprintf(e.stdout, "lb %s\n", target)
	rest, secs := functionSections(st)
	if err := render(e.stdout, rest); err != nil {
		return err
	}
	if secs == nil { // an lb from before many functions
		return nil
	}
	fmt.Fprintln(e.stdout)
	return writeSections(e.stdout, secs)
}
