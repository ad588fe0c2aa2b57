package registry

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-faas/spillway"
)

// Limits of a function's own settings (addfaas --concurrency, --timeout).
const (
	// MaxWorkers bounds --min and --max, the same ceiling as MAX_SERVERS's.
	MaxWorkers = 1000
	// MaxConcurrency is the most calls one worker may run at once, the same
	// ceiling as WORKER_CONCURRENCY's.
	MaxConcurrency = 256
	// MaxTimeout is the longest local deadline: Lambda's own limit, so a call
	// that passes it can still be taken over by the cloud.
	MaxTimeout = 15 * time.Minute
)

// Record fields of the settings (spillway.Settings). A field that is absent
// is unset.
const (
	FieldMin         = "min"
	FieldMax         = "max"
	FieldConcurrency = "concurrency"
	FieldTimeout     = "timeout"
	// FieldConstraints holds the Swarm placement constraints, one a line.
	FieldConstraints = "constraints"
)

// SettingError is one setting out of its range. Field is the record field,
// which is also the name of addfaas's flag (min → --min).
type SettingError struct {
	Field   string
	Value   string
	Problem string
}

func (e *SettingError) Error() string { return fmt.Sprintf("%s %s: %s", e.Field, e.Value, e.Problem) }

// CheckSettings returns every setting out of its range, in field order:
// min 0..1000, max 1..1000 and ≥ min (when both are set), concurrency
// 1..256, 0 < timeout ≤ 15m (a zero Timeout is unset).
func CheckSettings(s spillway.Settings) []*SettingError {
	var errs []*SettingError
	bad := func(field, value, problem string) {
		errs = append(errs, &SettingError{Field: field, Value: value, Problem: problem})
	}
	if s.Min != nil && (*s.Min < 0 || *s.Min > MaxWorkers) {
		bad(FieldMin, strconv.Itoa(*s.Min), fmt.Sprintf("must be between 0 and %d", MaxWorkers))
	}
	if s.Max != nil {
		switch {
		case *s.Max < 1 || *s.Max > MaxWorkers:
			bad(FieldMax, strconv.Itoa(*s.Max), fmt.Sprintf("must be between 1 and %d", MaxWorkers))
		case s.Min != nil && *s.Max < *s.Min:
			bad(FieldMax, strconv.Itoa(*s.Max), fmt.Sprintf("must be at least min (%d)", *s.Min))
		}
	}
	if s.Concurrency != nil && (*s.Concurrency < 1 || *s.Concurrency > MaxConcurrency) {
		bad(FieldConcurrency, strconv.Itoa(*s.Concurrency), fmt.Sprintf("must be between 1 and %d", MaxConcurrency))
	}
	for _, c := range s.ConstraintList() {
		if !strings.Contains(c, "==") && !strings.Contains(c, "!=") {
			bad(FieldConstraints, strconv.Quote(c), "want one placement constraint such as node.labels.gpu==true")
		}
	}
	if s.Timeout < 0 || s.Timeout > MaxTimeout {
		bad(FieldTimeout, s.Timeout.String(), fmt.Sprintf("must be positive and at most %s", fmtDuration(MaxTimeout)))
	}
	return errs
}

// ValidateSettings is CheckSettings as one error (nil when all are in range).
func ValidateSettings(s spillway.Settings) error {
	var errs []error
	for _, e := range CheckSettings(s) {
		errs = append(errs, e)
	}
	return errors.Join(errs...)
}

// settingsFields returns the record's settings fields as field, value pairs;
// an unset setting has an empty value, which Publish turns into no field.
func settingsFields(s spillway.Settings) []string {
	opt := func(p *int) string {
		if p == nil {
			return ""
		}
		return strconv.Itoa(*p)
	}
	timeout := ""
	if s.Timeout != 0 {
		timeout = s.Timeout.String()
	}
	return []string{
		FieldMin, opt(s.Min),
		FieldMax, opt(s.Max),
		FieldConcurrency, opt(s.Concurrency),
		FieldTimeout, timeout,
		FieldConstraints, strings.Join(s.ConstraintList(), "\n"),
	}
}

// parseSettings reads the settings fields of a record hash and checks their
// ranges. The error names the field and its stored value.
func parseSettings(h map[string]string) (spillway.Settings, error) {
	var s spillway.Settings
	for _, f := range []struct {
		field string
		dst   **int
	}{{FieldMin, &s.Min}, {FieldMax, &s.Max}, {FieldConcurrency, &s.Concurrency}} {
		v, ok := h[f.field]
		if !ok || v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return spillway.Settings{}, fmt.Errorf("%s %q is not an integer", f.field, v)
		}
		*f.dst = &n
	}
	if v := h[FieldTimeout]; v != "" {
		d, err := parseTimeout(v)
		if err != nil {
			return spillway.Settings{}, fmt.Errorf("%s %q: %w", FieldTimeout, v, err)
		}
		if d == 0 {
			return spillway.Settings{}, fmt.Errorf("%s %q: must be positive", FieldTimeout, v)
		}
		s.Timeout = d
	}
	s.Constraints = strings.Join(spillway.Settings{Constraints: h[FieldConstraints]}.ConstraintList(), "\n")
	if errs := CheckSettings(s); len(errs) > 0 {
		return spillway.Settings{}, errs[0]
	}
	return s, nil
}

// parseTimeout reads a Go duration ("45s", "1m30s"), or a bare number of
// seconds, which is what a hand-written HSET most likely holds.
func parseTimeout(v string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(v, 64); err == nil {
		if n < 0 || n > MaxTimeout.Seconds() {
			return 0, fmt.Errorf("must be positive and at most %s", fmtDuration(MaxTimeout))
		}
		return time.Duration(n * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New(`not a duration (like "45s" or "2m")`)
	}
	return d, nil
}

// fmtDuration prints whole minutes as "15m" rather than "15m0s".
func fmtDuration(d time.Duration) string {
	if d%time.Minute == 0 && d >= time.Minute {
		return strconv.FormatInt(int64(d/time.Minute), 10) + "m"
	}
	return d.String()
}
