// Package ui is lb's operator page: GET /ui draws, every second, where calls
// run (local against cloud), their latency, why calls were offloaded, the
// pool of each function, the cloud's state and the last events; GET
// /ui/data is the JSON it draws from. The page is an html/template and plain
// JavaScript and CSS embedded in the binary, under a Content-Security-Policy
// that allows nothing from elsewhere.
package ui

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway-faas/spillway/internal/gateway"
)

//go:embed assets
var assets embed.FS

// csp lets the page load its own script, style and data and nothing else.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Options configure the page.
type Options struct {
	// Token is LB_AUTH_TOKEN: when set, the page and its data need it as a
	// basic-auth password (any user) or a bearer token, as the rest of lb.
	Token string
	// Function is the configured function, named on the page while lb starts.
	Function string
	// Interval is how often the sampler reads lb and the page polls; 0 means 1s.
	Interval time.Duration
	Log      *slog.Logger
	Now      func() time.Time // nil means time.Now
}

// UI is the page, its data endpoint, the events log and the sampler behind
// them. New starts the sampler; Close stops it.
type UI struct {
	opts    Options
	events  *Events
	sampler *sampler
	source  atomic.Pointer[Source] // nil while lb starts
	page    *template.Template
	version string // content hash of the assets, for cache busting

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New builds the page and starts sampling once a second (nothing is read
// until SetSource).
func New(opts Options) *UI {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	u := &UI{opts: opts, events: NewEvents(opts.Now)}
	u.sampler = &sampler{events: u.events}
	u.page = template.Must(template.ParseFS(assets, "assets/index.html"))
	u.version = assetsVersion()
	ctx, cancel := context.WithCancel(context.Background())
	u.cancel = cancel
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		u.loop(ctx)
	}()
	return u
}

// Events is the log the rest of lb reports to.
func (u *UI) Events() *Events { return u.events }

// SetSource points the page at the running gateway and takes the first
// sample at once, so the overview counts every call from then on. Call it
// before lb reports ready.
func (u *UI) SetSource(src Source) {
	u.source.Store(&src)
	if err := u.sampler.observe(src, u.opts.Now()); err != nil {
		u.opts.Log.Warn("ui: sample lb state", "err", err)
	}
}

// Close stops the sampler and waits for it.
func (u *UI) Close() {
	u.cancel()
	u.wg.Wait()
}

func (u *UI) src() Source {
	if p := u.source.Load(); p != nil {
		return *p
	}
	return nil
}

func (u *UI) loop(ctx context.Context) {
	t := time.NewTicker(u.opts.Interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		src := u.src()
		if src == nil {
			continue
		}
		if err := u.sampler.observe(src, u.opts.Now()); err != nil {
			if !failing {
				u.opts.Log.Warn("ui: sample lb state", "err", err)
			}
			failing = true
			continue
		}
		failing = false
	}
}

// Sample takes one sample now, as the loop does every Interval (tests call it
// to move the page's clock by hand).
func (u *UI) Sample(now time.Time) error {
	src := u.src()
	if src == nil {
		return nil
	}
	return u.sampler.observe(src, now)
}

// Data is what GET /ui/data answers now.
func (u *UI) Data() (Data, error) {
	d := Data{
		Now:       u.opts.Now().UTC(),
		IntervalS: u.opts.Interval.Seconds(),
		WindowS:   (SeriesLength * u.opts.Interval).Seconds(),
		Reasons:   []Count{},
		Functions: []FunctionState{},
		Events:    u.events.Last(),
	}
	src := u.src()
	if src == nil {
		d.State = "starting"
		d.Message = u.startingMessage()
		for _, r := range Reasons {
			d.Reasons = append(d.Reasons, Count{Name: r})
		}
		d.Series, d.Latency, d.LB.Replicas = []Point{}, []RouteLatency{}, []Replica{}
		return d, nil
	}
	d.fill(src.Status())
	if d.State == "starting" {
		d.Message = u.startingMessage()
	}
	d.Series = u.sampler.series()
	d.Latency = u.sampler.latency()
	return d, nil
}

func (u *UI) startingMessage() string {
	return "lb is starting: waiting for function " + u.opts.Function + " to be published and its workers to be ready"
}

// Handler serves GET /ui, /ui/data and /ui/static/*, behind Options.Token.
func (u *UI) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui", u.servePage)
	mux.HandleFunc("GET /ui/{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/data", u.serveData)
	static, _ := fs.Sub(assets, "assets")
	files := http.StripPrefix("/ui/static/", http.FileServerFS(static))
	mux.Handle("GET /ui/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	}))
	return gateway.Authorize(u.opts.Token, headers(mux))
}

// headers sets the security headers on every answer of the page.
func headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		next.ServeHTTP(w, r)
	})
}

func (u *UI) servePage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	err := u.page.Execute(w, map[string]any{
		"Function":   u.opts.Function,
		"Version":    u.version,
		"IntervalMS": u.opts.Interval.Milliseconds(),
	})
	if err != nil {
		u.opts.Log.Warn("ui: render page", "err", err)
	}
}

func (u *UI) serveData(w http.ResponseWriter, r *http.Request) {
	d, err := u.Data()
	w.Header().Set("Cache-Control", "no-store")
	if err != nil {
		u.opts.Log.Warn("ui: page data", "err", err)
		http.Error(w, "lb state unavailable: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(d)
}

// assetsVersion hashes the embedded assets so a new binary's page never runs
// an old cached script.
func assetsVersion() string {
	h := sha256.New()
	_ = fs.WalkDir(assets, "assets", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, rerr := assets.ReadFile(path)
		if rerr != nil {
			return rerr
		}
		h.Write([]byte(path))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))[:12]
}
