// Command addfaas publishes a function's Python source to Redis, where lb
// reads it (and rolls its workers and its Lambda when it changes).
//
//	addfaas [--name NAME] [--redis ADDR] [--style auto|script|handler] [--handler NAME]
//	        [--min N] [--max N] [--concurrency N] [--timeout D] [--constraint EXPR]... SOURCE
//	addfaas --list
//	addfaas --show NAME
//	addfaas --delete NAME
//
// SOURCE is a file path, - for stdin, or an http(s):// URL. The source is
// validated before anything is written. --min, --max, --concurrency and
// --timeout are the function's own pool settings, stored in its record; one
// not given is lb's .env value. --constraint (repeatable) is a Swarm
// placement constraint of the function's workers (POOL_BACKEND=swarm). Exit status: 0 done; 2 bad input or usage
// (nothing written); 1 Redis or the Python checker failed, or the function
// to show or delete does not exist.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/spillway-faas/spillway"
	spwconfig "github.com/spillway-faas/spillway/internal/config"
	"github.com/spillway-faas/spillway/internal/pysource"
	"github.com/spillway-faas/spillway/internal/registry"
)

const (
	exitOK      = 0
	exitFailure = 1 // Redis, Python checker or other environment failure
	exitUsage   = 2 // bad input or usage: nothing was written

	urlTimeout = 15 * time.Second
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// go-redis logs dial failures on its own; addfaas reports them once, itself.
	redis.SetLogger(quietLogger{})
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.LookupEnv))
}

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// usageError is bad input: exit 2, nothing written.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

type config struct {
	name          string
	redisAddr     string
	redisPassword string
	style         string
	handler       string
	python        string
	redisTimeout  time.Duration
	list          bool
	show          string
	delete        string
	source        string
	// settings are the function's own pool settings (--min, --max,
	// --concurrency, --timeout); unset ones are lb's .env values.
	settings spillway.Settings
	// idempotent marks the function safe to run twice: lb may then retry
	// it after a cloud 5xx or a lost answer.
	idempotent bool
	// reuseProcess runs a script in its warm runner, not a fresh process
	// per call (record field reuse_process).
	reuseProcess bool
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	cfg, err := parseArgs(args, stderr, lookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err == nil {
		err = execute(ctx, cfg, stdin, stdout)
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "addfaas: %s\n", oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || errors.Is(err, pysource.ErrInvalid) {
		return exitUsage
	}
	return exitFailure
}

func parseArgs(args []string, stderr io.Writer, lookupEnv func(string) (string, bool)) (config, error) {
	// The environment, then a .env in the working directory when there is
	// one; an empty variable falls through to the file.
	lookup, err := spwconfig.Dotenv(".env", spwconfig.NonEmpty(lookupEnv))
	if err != nil {
		return config{}, usageError{err}
	}
	env, err := spwconfig.LoadAddfaas(lookup)
	if err != nil {
		return config{}, usageError{err}
	}
	var cfg config
	fs := flag.NewFlagSet("addfaas", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported on one line by run; usage only on -h
	fs.StringVar(&cfg.name, "name", env.FunctionName, "function name (env FAAS_FUNCTION_NAME)")
	fs.StringVar(&cfg.redisAddr, "redis", env.RedisAddr, "Redis address host:port (env REDIS_ADDR)")
	fs.StringVar(&cfg.redisPassword, "redis-password", env.RedisPassword,
		"Redis password (env REDIS_PASSWORD, or .env; prefer those: a flag shows in the process list)")
	fs.StringVar(&cfg.style, "style", "auto", "auto, script or handler")
	fs.StringVar(&cfg.handler, "handler", spillway.DefaultHandler, "handler function name (handler style)")
	fs.StringVar(&cfg.python, "python", "", "Python interpreter used to validate the source (default python3 on PATH)")
	fs.DurationVar(&cfg.redisTimeout, "redis-timeout", 5*time.Second, "keep trying to reach Redis for `D`")
	var settings settingFlags
	fs.Var(settings.flag("min"), "min", "keep `N` workers of this function, 0 to scale to zero (default lb's NUMBER_OF_SERVERS)")
	fs.Var(settings.flag("max"), "max", "run at most `N` workers of this function (default lb's MAX_SERVERS)")
	fs.Var(settings.flag("concurrency"), "concurrency", fmt.Sprintf("one worker of this function runs `N` calls at once, 1..%d (default lb's WORKER_CONCURRENCY)", registry.MaxConcurrency))
	fs.Var(settings.flag("timeout"), "timeout", "give a local call of this function `D` (like 45s or 2m; 5 is seconds; at most 15m) before the cloud takes it over (default lb's LOCAL_TIMEOUT)")
	fs.Var(settings.flag("constraint"), "constraint", "POOL_BACKEND=swarm: place this function's workers by Swarm constraint `EXPR`, like node.labels.gpu==true (repeatable)")
	fs.BoolVar(&cfg.idempotent, "idempotent", false, "the function may run more than once per call: lb retries it after a cloud 5xx or a lost answer (default: at most once)")
	fs.BoolVar(&cfg.reuseProcess, "reuse-process", false, "script style: run each call in the warm Python process (fresh __main__, argv and stdout per call; module state, threads, files persist) instead of a fresh process; much faster, not the semantics of spawning")
	fs.BoolVar(&cfg.list, "list", false, "list published functions (name, version, style, settings)")
	fs.StringVar(&cfg.show, "show", "", "print the record and code of function `NAME`")
	fs.StringVar(&cfg.delete, "delete", "", "remove function `NAME` from the registry and print what was removed; lb then drains its workers and deletes its Lambda and REST API")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: addfaas [--name NAME] [--redis ADDR] [--style auto|script|handler] [--handler NAME] [--idempotent] [--reuse-process]\n"+
			"               [--min N] [--max N] [--concurrency N] [--timeout D] [--constraint EXPR]... SOURCE\n"+
			"       addfaas --list | --show NAME | --delete NAME\n"+
			"SOURCE is a file, - for stdin, or an http(s):// URL (at most %d bytes).\n"+
			"Each publish stores exactly the options given: --min, --max, --concurrency and --timeout\n"+
			"left out take lb's .env values (NUMBER_OF_SERVERS, MAX_SERVERS, WORKER_CONCURRENCY, LOCAL_TIMEOUT).\n"+
			"Exit status: 0 done; 2 bad input, nothing written; 1 Redis or Python failed, or no such function.\n\nFlags:\n", pysource.MaxSize)
		fs.PrintDefaults()
	}

	// Flags may come before or after SOURCE.
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fs.SetOutput(stderr)
				fs.Usage()
				return config{}, err
			}
			return config{}, usageError{fmt.Errorf("%w (see --help)", err)}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		positional = append(positional, args[0])
		args = args[1:]
	}

	var modes []string // --list, --show, --delete: what was asked instead of a publish
	publishOnly := ""  // a flag given that only a publish uses
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "list", "show", "delete":
			modes = append(modes, "--"+f.Name)
		case "style", "handler", "idempotent", "reuse-process", "min", "max", "concurrency", "timeout", "constraint":
			if publishOnly == "" {
				publishOnly = "--" + f.Name
			}
		}
	})
	switch {
	case len(modes) > 1:
		return config{}, usagef("%s are exclusive", strings.Join(modes, " and "))
	case len(modes) == 1 && len(positional) > 0:
		return config{}, usagef("%s takes no SOURCE", modes[0])
	case len(modes) == 1 && publishOnly != "":
		return config{}, usagef("%s is for publishing a function, not for %s", publishOnly, modes[0])
	case len(modes) == 0 && len(positional) != 1:
		return config{}, usagef("want exactly one SOURCE (a file, - for stdin, or an http(s):// URL); see --help")
	case cfg.redisTimeout <= 0:
		return config{}, usagef("--redis-timeout must be positive")
	case strings.TrimSpace(cfg.redisAddr) == "":
		return config{}, usagef("empty Redis address (--redis or REDIS_ADDR)")
	}
	if len(positional) == 1 {
		cfg.source = positional[0]
	}
	switch {
	case cfg.show != "":
		if err := registry.ValidateName(cfg.show); err != nil {
			return config{}, usagef("--show: %v", err)
		}
	case cfg.delete != "":
		if err := registry.ValidateName(cfg.delete); err != nil {
			return config{}, usagef("--delete: %v", err)
		}
	case !cfg.list:
		if err := registry.ValidateName(cfg.name); err != nil {
			return config{}, usagef("--name: %v", err)
		}
	}
	if cfg.settings, err = settings.parse(); err != nil {
		return config{}, err
	}
	return cfg, nil
}

// settingFlags holds --min, --max, --concurrency and --timeout as given, to
// tell a flag left out (lb's default) from one given.
type settingFlags map[string]string

// flag returns the flag.Value of the setting named.
func (s *settingFlags) flag(name string) flag.Value { return settingFlag{s, name} }

type settingFlag struct {
	set  *settingFlags
	name string
}

func (f settingFlag) String() string {
	if f.set == nil {
		return ""
	}
	return (*f.set)[f.name]
}

func (f settingFlag) Set(v string) error {
	if *f.set == nil {
		*f.set = settingFlags{}
	}
	if f.name == "constraint" && (*f.set)[f.name] != "" {
		v = (*f.set)[f.name] + "\n" + v // repeatable: one a line
	}
	(*f.set)[f.name] = v
	return nil
}

// parse reads the settings given and checks their ranges; each error names
// the flag and its value.
func (s settingFlags) parse() (spillway.Settings, error) {
	var out spillway.Settings
	for _, f := range []struct {
		name string
		dst  **int
	}{{registry.FieldMin, &out.Min}, {registry.FieldMax, &out.Max}, {registry.FieldConcurrency, &out.Concurrency}} {
		v, ok := s[f.name]
		if !ok {
			continue
		}
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil {
			return spillway.Settings{}, usagef("--%s %q: want a whole number", f.name, v)
		}
		*f.dst = &n
	}
	if v, ok := s[registry.FieldTimeout]; ok {
		d, err := spwconfig.ParseDuration(strings.TrimSpace(v))
		if err != nil {
			return spillway.Settings{}, usagef("--timeout %q: %v", v, err)
		}
		if d <= 0 {
			return spillway.Settings{}, usagef("--timeout %s: must be positive", v)
		}
		out.Timeout = d
	}
	out.Constraints = s["constraint"]
	var errs []string
	for _, e := range registry.CheckSettings(out) {
		errs = append(errs, "--"+e.Error())
	}
	if len(errs) > 0 {
		return spillway.Settings{}, usagef("%s", strings.Join(errs, "; "))
	}
	return out, nil
}

func execute(ctx context.Context, cfg config, stdin io.Reader, stdout io.Writer) error {
	if cfg.list || cfg.show != "" || cfg.delete != "" {
		store, err := dial(ctx, cfg)
		if err != nil {
			return err
		}
		defer store.Close()
		switch {
		case cfg.list:
			return list(ctx, store, stdout)
		case cfg.show != "":
			return show(ctx, store, cfg.show, stdout)
		}
		return del(ctx, store, cfg.delete, cfg.redisTimeout, stdout)
	}

	// Validate everything before touching Redis.
	src, err := readSource(ctx, cfg.source, stdin, pysource.MaxSize)
	if err != nil {
		return err
	}
	checker := pysource.Checker{Python: cfg.python}
	analysis, err := checker.Check(ctx, src, cfg.handler)
	if err != nil {
		return err
	}
	style, err := pysource.Resolve(analysis, cfg.style)
	if err != nil {
		return err
	}
	if cfg.reuseProcess && style != spillway.StyleScript {
		return usagef("--reuse-process is for script-style functions; this one is %s style", style)
	}
	fn := spillway.Function{Name: cfg.name, Code: string(src), Style: style, Idempotent: cfg.idempotent,
		ReuseProcess: cfg.reuseProcess, Settings: cfg.settings}
	if style == spillway.StyleHandler {
		fn.Handler = analysis.Handler
	}

	store, err := dial(ctx, cfg)
	if err != nil {
		return err
	}
	defer store.Close()
	pctx, cancel := context.WithTimeout(ctx, cfg.redisTimeout)
	defer cancel()
	fn, err = store.Publish(pctx, fn)
	if err != nil {
		return err
	}
	printRecord(stdout, "name", fn)
	return nil
}

// printRecord prints fn's record, without its code, one "field: value" a
// line; the first line is "<first>: <name>".
func printRecord(w io.Writer, first string, fn spillway.Function) {
	fmt.Fprintf(w, "%-8s %s\nversion: %d\nstyle:   %s\n", first+":", fn.Name, fn.Version, fn.Style)
	if fn.Style == spillway.StyleHandler {
		fmt.Fprintf(w, "handler: %s\n", fn.HandlerName())
	}
	fmt.Fprintf(w, "sha256:  %s\n", fn.SHA256)
	if fn.Idempotent {
		fmt.Fprintf(w, "idempotent: yes\n")
	}
	if fn.ReuseProcess {
		fmt.Fprintf(w, "reuse_process: yes\n")
	}
	printSettings(w, fn.Settings)
}

// printSettings prints the settings that are set, one a line.
func printSettings(w io.Writer, s spillway.Settings) {
	for _, f := range []struct {
		name string
		v    *int
	}{{"min", s.Min}, {"max", s.Max}, {"concurrency", s.Concurrency}} {
		if f.v != nil {
			fmt.Fprintf(w, "%s: %d\n", f.name, *f.v)
		}
	}
	if s.Timeout != 0 {
		fmt.Fprintf(w, "timeout: %s\n", s.Timeout)
	}
	for _, c := range s.ConstraintList() {
		fmt.Fprintf(w, "constraint: %s\n", c)
	}
}

// del removes name's record and prints what it held.
func del(ctx context.Context, store *registry.Store, name string, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	fn, err := store.Delete(ctx, name)
	if err != nil {
		return err
	}
	if fn.Style == "" { // the record was unreadable: only its name is known
		fmt.Fprintf(stdout, "deleted: %s\n", fn.Name)
		return nil
	}
	printRecord(stdout, "deleted", fn)
	return nil
}

func dial(ctx context.Context, cfg config) (*registry.Store, error) {
	return registry.Dial(ctx, cfg.redisAddr, registry.Options{
		Password:       cfg.redisPassword,
		ConnectTimeout: cfg.redisTimeout,
		MaxBackoff:     time.Second,
	})
}

// readSource reads SOURCE: a path, - for stdin, or an http(s) URL. At most
// limit bytes are accepted; every failure is the input's fault (exit 2).
func readSource(ctx context.Context, source string, stdin io.Reader, limit int) ([]byte, error) {
	var (
		r    io.Reader
		what = source
	)
	switch {
	case source == "-":
		r, what = stdin, "stdin"
	case strings.HasPrefix(source, "http://") || strings.HasPrefix(source, "https://"):
		return fetch(ctx, source, limit)
	case strings.Contains(source, "://"):
		return nil, usagef("source %q: only http:// and https:// URLs are supported", source)
	default:
		f, err := os.Open(source)
		if err != nil {
			return nil, usageError{fmt.Errorf("read source: %w", err)}
		}
		defer f.Close()
		if st, err := f.Stat(); err == nil && st.IsDir() {
			return nil, usagef("read source %s: is a directory", source)
		}
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, usageError{fmt.Errorf("read source %s: %w", what, err)}
	}
	if len(b) > limit {
		return nil, usagef("source %s is over the %d-byte limit", what, limit)
	}
	return b, nil
}

func fetch(ctx context.Context, url string, limit int) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, urlTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, usagef("source URL %q: %v", url, err)
	}
	client := &http.Client{
		CheckRedirect: func(r *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("more than 5 redirects")
			}
			if r.URL.Scheme != "http" && r.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s URL", r.URL.Scheme)
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, usageError{fmt.Errorf("fetch source: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, usagef("fetch source %s: HTTP %s", url, resp.Status)
	}
	if resp.ContentLength > int64(limit) {
		return nil, usagef("source %s is %d bytes, over the %d-byte limit", url, resp.ContentLength, limit)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	if err != nil {
		return nil, usageError{fmt.Errorf("fetch source %s: %w", url, err)}
	}
	if len(b) > limit {
		return nil, usagef("source %s is over the %d-byte limit", url, limit)
	}
	return b, nil
}

func list(ctx context.Context, store *registry.Store, stdout io.Writer) error {
	fns, err := store.List(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tSTYLE\tUPDATED\tSHA256\tSETTINGS")
	for _, fn := range fns {
		updated := "-"
		if !fn.UpdatedAt.IsZero() {
			updated = fn.UpdatedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.12s\t%s\n", fn.Name, fn.Version, fn.Style, updated, fn.SHA256, fn.Settings)
	}
	return tw.Flush()
}

func show(ctx context.Context, store *registry.Store, name string, stdout io.Writer) error {
	fn, err := store.Get(ctx, name)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "name:       %s\nversion:    %d\nstyle:      %s\n", fn.Name, fn.Version, fn.Style)
	if fn.Style == spillway.StyleHandler {
		fmt.Fprintf(stdout, "handler:    %s\n", fn.HandlerName())
	}
	fmt.Fprintf(stdout, "runtime:    %s\nsha256:     %s\n", fn.Runtime, fn.SHA256)
	if fn.ReuseProcess {
		fmt.Fprintf(stdout, "reuse_process: yes\n")
	}
	printSettings(stdout, fn.Settings)
	if fn.UpdatedAt.IsZero() {
		fmt.Fprintf(stdout, "updated_at: - (legacy plain key)\n")
	} else {
		fmt.Fprintf(stdout, "updated_at: %s\n", fn.UpdatedAt.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(stdout, "\n%s", fn.Code)
	if !strings.HasSuffix(fn.Code, "\n") {
		fmt.Fprintln(stdout)
	}
	return nil
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
