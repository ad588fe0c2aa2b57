package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// parser collects every error instead of stopping at the first.
type parser struct {
	lookup Lookup
	errs   []error
}

func (p *parser) raw(name string) (string, bool) {
	v, ok := p.lookup(name)
	v = strings.TrimSpace(v)
	return v, ok && v != ""
}

func (p *parser) fail(name, value, why string) {
	p.errs = append(p.errs, fmt.Errorf("%s=%q: %s", name, value, why))
}

// workerImage is the default of WORKER_IMAGE and LOCALCLOUD_IMAGE: the
// worker image make images builds, at IMAGE_TAG.
func (p *parser) workerImage() string {
	return "spillway-worker:" + p.str("IMAGE_TAG", "latest")
}

func (p *parser) str(name, def string) string {
	if v, ok := p.raw(name); ok {
		return v
	}
	return def
}

func (p *parser) int(name string, def int) int {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		p.fail(name, v, "not an integer")
		return def
	}
	return n
}

func (p *parser) int64(name string, def int64) int64 {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		p.fail(name, v, "not an integer")
		return def
	}
	return n
}

func joinErrs(errs []error) error { return errors.Join(errs...) }

func (p *parser) bool(name string, def bool) bool {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, v, "not a boolean (true/false, 1/0)")
		return def
	}
	return b
}

func (p *parser) float(name string, def float64) float64 {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		p.fail(name, v, "not a number")
		return def
	}
	return f
}

// duration accepts a bare number of seconds ("5", "0.5") or a Go duration ("5s", "300ms").
func (p *parser) duration(name string, def time.Duration) time.Duration {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	d, err := ParseDuration(v)
	if err != nil {
		p.fail(name, v, err.Error())
		return def
	}
	return d
}

// ParseDuration reads "5" as five seconds and anything else as time.ParseDuration.
func ParseDuration(v string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e9 {
			return 0, errors.New("not a usable number of seconds")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New(`not a duration (use seconds like "5" or a unit like "5s", "300ms")`)
	}
	return d, nil
}

// bytes accepts a plain byte count or a k/m/g suffix (Docker's style).
func (p *parser) bytes(name string, def int64) int64 {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	n, err := ParseBytes(v)
	if err != nil {
		p.fail(name, v, err.Error())
		return def
	}
	return n
}

// ParseBytes reads "1048576", "512k", "256m", "1g" (also "256MiB"-like suffixes).
func ParseBytes(v string) (int64, error) {
	s := strings.ToLower(strings.TrimSpace(v))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "ib"), "b")
	mult := int64(1)
	if s != "" {
		switch s[len(s)-1] {
		case 'k':
			mult, s = 1<<10, s[:len(s)-1]
		case 'm':
			mult, s = 1<<20, s[:len(s)-1]
		case 'g':
			mult, s = 1<<30, s[:len(s)-1]
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, errors.New(`not a size (use bytes or a k/m/g suffix like "256m")`)
	}
	return n * mult, nil
}

func (p *parser) choice(name, def string, choices []string) string {
	v, ok := p.raw(name)
	if !ok {
		return def
	}
	for _, c := range choices {
		if v == c {
			return v
		}
	}
	p.fail(name, v, "must be one of "+strings.Join(choices, ", "))
	return def
}

var (
	lbIDRE     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	instanceRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`) // LOCALCLOUD_INSTANCE: a label value
)

// defaultLBID names a replica by its host and process: unique among the
// replicas of a pool, on one host or several.
func defaultLBID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "lb"
	}
	host = strings.Map(func(r rune) rune {
		if r == '.' || r == '-' || r == '_' || ('0' <= r && r <= '9') || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') {
			return r
		}
		return '-'
	}, host)
	id := fmt.Sprintf("%s-%d", host, os.Getpid())
	if len(id) > 64 {
		id = id[len(id)-64:]
	}
	return strings.TrimLeft(id, ".-_")
}
