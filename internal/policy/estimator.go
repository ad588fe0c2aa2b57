package policy

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/spillway-faas/spillway"
)

// EstimatorConfig holds the priors an Estimator starts from and how fast it
// forgets. Zero fields take the defaults of DefaultEstimatorConfig.
type EstimatorConfig struct {
	// LocalService is the prior mean local service time per call (one slot).
	LocalService time.Duration
	// CloudWarm and CloudCold are the prior cloud round trips of a call that
	// finds a warm execution environment and of one that cold-starts.
	CloudWarm time.Duration
	CloudCold time.Duration
	// WorkerColdStart is the prior time from starting a worker to its first call.
	WorkerColdStart time.Duration
	// CloudKeepAlive is how long the cloud keeps an idle execution environment
	// warm; after that long without a cloud call the next one is assumed cold.
	CloudKeepAlive time.Duration
	// ArrivalWindow is the time constant of the arrival-rate estimate.
	ArrivalWindow time.Duration
	// Weight is the weight of one observation in the moving averages (0..1].
	Weight float64
}

// DefaultEstimatorConfig returns the priors used when nothing was observed.
func DefaultEstimatorConfig() EstimatorConfig {
	return EstimatorConfig{
		LocalService:    100 * time.Millisecond,
		CloudWarm:       150 * time.Millisecond,
		CloudCold:       1 * time.Second,
		WorkerColdStart: 2 * time.Second,
		CloudKeepAlive:  5 * time.Minute,
		ArrivalWindow:   2 * time.Second,
		Weight:          0.05,
	}
}

func (c EstimatorConfig) withDefaults() EstimatorConfig {
	d := DefaultEstimatorConfig()
	if c.LocalService <= 0 {
		c.LocalService = d.LocalService
	}
	if c.CloudWarm <= 0 {
		c.CloudWarm = d.CloudWarm
	}
	if c.CloudCold <= 0 {
		c.CloudCold = d.CloudCold
	}
	if c.WorkerColdStart <= 0 {
		c.WorkerColdStart = d.WorkerColdStart
	}
	if c.CloudKeepAlive <= 0 {
		c.CloudKeepAlive = d.CloudKeepAlive
	}
	if c.ArrivalWindow <= 0 {
		c.ArrivalWindow = d.ArrivalWindow
	}
	if c.Weight <= 0 || c.Weight > 1 {
		c.Weight = d.Weight
	}
	return c
}

// Estimates is a snapshot of what the Estimator has learned, as of Now.
type Estimates struct {
	// LocalService is the recent mean time a call holds a local slot.
	LocalService time.Duration
	// CloudRoundTrip is the expected round trip of the next cloud call, cold
	// starts included (warm + cold fraction × (cold - warm); cold when the cloud
	// has been idle longer than its keep-alive).
	CloudRoundTrip time.Duration
	// CloudWarm and CloudCold are the recent round trips of warm and cold calls.
	CloudWarm time.Duration
	CloudCold time.Duration
	// CloudColdFraction is the recent fraction of cloud calls that cold-started.
	CloudColdFraction float64
	// WorkerColdStart is the recent time from starting a worker to ready.
	WorkerColdStart time.Duration
	// ArrivalRate is the recent arrival rate in calls per second.
	ArrivalRate float64
	// CloudEnvs is how many cloud execution environments are likely warm (the
	// most cloud calls in flight at once within the keep-alive); 0 when
	// unknown (ObserveCloudStart never called, or the cloud idle too long).
	CloudEnvs int
	// LocalSamples and CloudSamples count the observations behind the numbers
	// (0 means the value is the prior).
	LocalSamples int64
	CloudSamples int64
}

// Estimator learns local service time, cloud round trip (cold starts
// included), worker cold start and the arrival rate online from what the lb
// observes. It is safe for concurrent use; every method is O(1).
type Estimator struct {
	cfg EstimatorConfig
	tau float64 // ArrivalWindow in seconds

	mu sync.Mutex // guards everything below

	// Moving averages in seconds (coldFrac is a fraction) and their counts.
	local, cloudWarm, cloudCold, coldFrac, workerStart float64
	localN, cloudN, warmN, coldN, startN               int64
	lastCloud                                          time.Time

	arrivals    float64 // decayed arrival count as of lastArrival
	lastArrival time.Time

	// Windowed maximum of cloud concurrency: the largest in-flight count seen
	// in the current and the previous half keep-alive.
	envCur, envPrev int
	envStart        time.Time
}

// NewEstimator returns an Estimator seeded with cfg's priors.
func NewEstimator(cfg EstimatorConfig) *Estimator {
	cfg = cfg.withDefaults()
	return &Estimator{
		cfg:         cfg,
		tau:         cfg.ArrivalWindow.Seconds(),
		local:       cfg.LocalService.Seconds(),
		cloudWarm:   cfg.CloudWarm.Seconds(),
		cloudCold:   cfg.CloudCold.Seconds(),
		workerStart: cfg.WorkerColdStart.Seconds(),
	}
}

// ewma folds x into avg; the first n observations are averaged plainly so the
// prior is forgotten quickly.
func ewma(avg, x float64, n int64, w float64) float64 {
	if n <= 0 {
		return x
	}
	if a := 1 / float64(n+1); a > w {
		return avg + a*(x-avg)
	}
	return avg + w*(x-avg)
}

// Observe records one finished call. For RouteLocal, latency is the time the
// call held a worker slot (not its queue wait); for RouteCloud it is the full
// round trip to the cloud, and coldStart says whether the cloud reported a
// cold start. Other routes are ignored.
func (e *Estimator) Observe(route spillway.Route, latency time.Duration, coldStart bool, now time.Time) {
	x := latency.Seconds()
	if x < 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	switch route {
	case spillway.RouteLocal:
		e.local = ewma(e.local, x, e.localN, e.cfg.Weight)
		e.localN++
	case spillway.RouteCloud:
		c := 0.0
		if coldStart {
			c = 1
			e.cloudCold = ewma(e.cloudCold, x, e.coldN, e.cfg.Weight)
			e.coldN++
		} else {
			e.cloudWarm = ewma(e.cloudWarm, x, e.warmN, e.cfg.Weight)
			e.warmN++
		}
		e.coldFrac = ewma(e.coldFrac, c, e.cloudN, e.cfg.Weight)
		e.cloudN++
		if now.After(e.lastCloud) {
			e.lastCloud = now
		}
	}
}

// ObserveCloudStart records a call starting in the cloud; inFlight is the
// number of cloud calls running, this one included. From it the Estimator
// learns how many execution environments the cloud keeps warm (the most calls
// it ran at once within the keep-alive), so the latency-aware policy can tell
// a call that will find a warm environment from one that will cold-start.
func (e *Estimator) ObserveCloudStart(inFlight int, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rollEnvsLocked(now)
	e.envCur = max(e.envCur, inFlight)
}

// rollEnvsLocked moves the concurrency window to now (e.mu held).
func (e *Estimator) rollEnvsLocked(now time.Time) {
	half := e.cfg.CloudKeepAlive / 2
	switch el := now.Sub(e.envStart); {
	case el < half:
	case el < 2*half:
		e.envPrev, e.envCur, e.envStart = e.envCur, 0, e.envStart.Add(half)
	default:
		e.envPrev, e.envCur, e.envStart = 0, 0, now
	}
}

// ObserveKeepWarm records an answered keep-warm ping (CLOUD_KEEP_WARM): the
// cloud has a warm execution environment as of now, so the next cloud call
// is expected warm (CloudRoundTrip, CloudEnvs at least 1) until the
// keep-alive passes without another ping or call.
func (e *Estimator) ObserveKeepWarm(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if now.After(e.lastCloud) {
		e.lastCloud = now
	}
	e.rollEnvsLocked(now)
	e.envCur = max(e.envCur, 1)
}

// ObserveWorkerStart records how long a new worker took from start to ready.
func (e *Estimator) ObserveWorkerStart(d time.Duration, now time.Time) {
	if d < 0 {
		return
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.workerStart = ewma(e.workerStart, d.Seconds(), e.startN, 0.2)
	e.startN++
}

// ObserveArrival records one call arriving at the lb.
func (e *Estimator) ObserveArrival(now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.arrivals = e.decayedLocked(now) + 1
	if now.After(e.lastArrival) {
		e.lastArrival = now
	}
}

// decayedLocked is the decayed arrival count as of now (e.mu held).
func (e *Estimator) decayedLocked(now time.Time) float64 {
	if e.lastArrival.IsZero() {
		return 0
	}
	dt := now.Sub(e.lastArrival).Seconds()
	if dt <= 0 {
		return e.arrivals
	}
	return e.arrivals * math.Exp(-dt/e.tau)
}

// Estimates returns what has been learned as of now.
func (e *Estimator) Estimates(now time.Time) Estimates {
	e.mu.Lock()
	defer e.mu.Unlock()
	warm, cold := e.cloudWarm, e.cloudCold
	if cold < warm {
		cold = warm
	}
	rtt := warm + e.coldFrac*(cold-warm)
	if e.lastCloud.IsZero() || now.Sub(e.lastCloud) > e.cfg.CloudKeepAlive {
		// Nothing warm is left (or nothing was ever called): expect a cold start.
		rtt = cold
	}
	// Read the window as it would be at now, without moving it.
	envs := 0
	switch el, half := now.Sub(e.envStart), e.cfg.CloudKeepAlive/2; {
	case el < half:
		envs = max(e.envCur, e.envPrev)
	case el < 2*half:
		envs = e.envCur
	}
	return Estimates{
		CloudEnvs:         envs,
		LocalService:      seconds(e.local),
		CloudRoundTrip:    seconds(rtt),
		CloudWarm:         seconds(warm),
		CloudCold:         seconds(cold),
		CloudColdFraction: e.coldFrac,
		WorkerColdStart:   seconds(e.workerStart),
		ArrivalRate:       e.decayedLocked(now) / e.tau,
		LocalSamples:      e.localN,
		CloudSamples:      e.cloudN,
	}
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Validate reports a bad field by the environment variable it comes from.
func (c EstimatorConfig) Validate() error {
	if c.Weight < 0 || c.Weight > 1 {
		return fmt.Errorf("estimator weight %v: want 0..1", c.Weight)
	}
	return nil
}
