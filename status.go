package spillway

// Status is lb's state at one moment: what status() returns, GET /status
// encodes and the operator page draws. internal/control assembles it; its
// JSON names are the keys those three show (a contract: clients, tests and
// the README name them).
type Status struct {
	Ready bool `json:"ready"`
	// LBID names this replica; Controller says whether it scales, rolls
	// and deploys; Replicas are the pool's live lbs, this one included.
	LBID          string          `json:"lb_id"`
	Controller    bool            `json:"controller"`
	Replicas      []ReplicaStatus `json:"replicas"`
	UptimeSeconds float64         `json:"uptime_s"`
	InFlight      int64           `json:"in_flight"`
	LocalInFlight int64           `json:"local_in_flight"`
	CloudInFlight int64           `json:"cloud_in_flight"`
	Queued        int64           `json:"queued"`
	PoolSize      int             `json:"pool_size"`
	PoolReady     int             `json:"pool_ready"`
	PoolDesired   int             `json:"pool_desired"`
	PoolMin       int             `json:"pool_min"`
	PoolMax       int             `json:"pool_max"`
	Concurrency   int             `json:"worker_concurrency"`
	Scheduler     string          `json:"scheduler"`
	OffloadPolicy string          `json:"offload_policy"`
	Autoscaler    string          `json:"autoscaler"`
	CloudMode     string          `json:"cloud"`
	Counters      Counters        `json:"counters"`
	Details       *StatusDetails  `json:"details,omitempty"`
	// Functions has one section per served function, by name. With many
	// functions the fields above are the sums over them (pool_min,
	// pool_max and worker_concurrency are lb's .env defaults) and Details
	// is FAAS_FUNCTION_NAME's.
	Functions map[string]FunctionSection `json:"functions,omitempty"`
	// Share is how MAX_TOTAL_WORKERS is shared among the functions; nil
	// when no cap is set.
	Share *ShareStatus `json:"share,omitempty"`
}

// FunctionSection is one function's part of status().
type FunctionSection struct {
	Name           string       `json:"name"`
	Version        int64        `json:"version"`
	SHA256         string       `json:"sha256"`
	Style          string       `json:"style"`
	Ready          bool         `json:"ready"` // its calls are served
	PoolSize       int          `json:"pool_size"`
	PoolReady      int          `json:"pool_ready"`
	PoolDesired    int          `json:"pool_desired"`
	PoolMin        int          `json:"pool_min"`
	PoolMax        int          `json:"pool_max"`
	Concurrency    int          `json:"worker_concurrency"`
	TimeoutSeconds float64      `json:"timeout_s"` // its LOCAL_TIMEOUT
	InFlight       int64        `json:"in_flight"`
	LocalInFlight  int64        `json:"local_in_flight"`
	CloudInFlight  int64        `json:"cloud_in_flight"`
	Queued         int64        `json:"queued"`
	Counters       Counters     `json:"counters"`
	Cloud          *CloudStatus `json:"cloud,omitempty"` // nil when CLOUD=off
	// Spare: a frozen spare worker of the function is ready (WORKER_SPARE).
	Spare bool `json:"spare"`
}

// FunctionInfo is one entry of functions(): a served function and its
// effective settings (its own, or lb's .env values).
type FunctionInfo struct {
	Name           string  `json:"name"`
	Version        int64   `json:"version"`
	Style          string  `json:"style"`
	Min            int     `json:"min"`
	Max            int     `json:"max"`
	Concurrency    int     `json:"concurrency"`
	TimeoutSeconds float64 `json:"timeout"` // seconds
	Workers        int     `json:"workers"` // worker containers now
	Ready          int     `json:"ready"`   // of them, ready for calls
}

// ReplicaStatus is one live lb of the pool.
type ReplicaStatus struct {
	LBID       string `json:"lb_id"`
	Addr       string `json:"addr"`
	Controller bool   `json:"controller"`
	InFlight   int    `json:"in_flight"`
	Queued     int    `json:"queued"`
}

// Counters are the totals of the calls one lb answered since it started.
type Counters struct {
	Calls         int64            `json:"calls"`
	Local         int64            `json:"local"`
	Cloud         int64            `json:"cloud"`
	Errors        int64            `json:"errors"`
	ColdStarts    int64            `json:"cold_starts"`
	Reasons       map[string]int64 `json:"reasons"`         // offload reason -> calls
	ErrorsByFault map[string]int64 `json:"errors_by_fault"` // fault code -> calls
	LastScale     string           `json:"last_scale"`      // the autoscaler's last change of size, and why
	Busy          int64            `json:"busy"`            // worker answers of busy, each placed again
}

// CallStats are one lb's calls: those in flight now and the totals. The
// gateway keeps them; Counters.LastScale is not its to fill.
type CallStats struct {
	InFlight      int64 // accepted, not yet answered
	LocalInFlight int64 // holding a worker slot
	CloudInFlight int64
	Queued        int64 // waiting for a worker slot
	Counters      Counters
}

// StatusDetails are the pool's members, the function they run, the pool's
// lifecycle counters and the cloud.
type StatusDetails struct {
	Members  []MemberStatus `json:"members"`
	Function FunctionStatus `json:"function"`
	Pool     PoolStatus     `json:"pool"`
	Cloud    *CloudStatus   `json:"cloud,omitempty"` // nil when CLOUD=off
}

// MemberStatus is one worker of the pool.
type MemberStatus struct {
	Name       string `json:"name"`
	Addr       string `json:"addr"`
	State      string `json:"state"` // starting, ready, draining, failed
	InFlight   int    `json:"in_flight"`
	Capacity   int    `json:"capacity"`
	Version    int64  `json:"version"`
	SHA256     string `json:"sha256"`
	Completed  int64  `json:"completed"`
	ColdStarts int64  `json:"cold_starts"`
}

// FunctionStatus is the function version the pool runs.
type FunctionStatus struct {
	Name    string `json:"name"`
	Version int64  `json:"version"`
	SHA256  string `json:"sha256"`
	Style   string `json:"style"`
}

// PoolStatus counts the pool's members by state and its lifecycle events
// since it opened.
type PoolStatus struct {
	Starting     int    `json:"starting"`
	Draining     int    `json:"draining"`
	Waiting      int    `json:"waiting"` // calls blocked for a slot
	Started      uint64 `json:"started"`
	Adopted      uint64 `json:"adopted"`
	Failed       uint64 `json:"failed"`
	Replacements uint64 `json:"replacements"`
	Removed      uint64 `json:"removed"`
	StartFailed  uint64 `json:"start_failed"`
	Spare        string `json:"spare"` // the frozen spare worker (WORKER_SPARE), "" when none is ready
}

// ShareStatus is MAX_TOTAL_WORKERS and each function's standing under the
// sharing rule at its last elasticity tick.
type ShareStatus struct {
	MaxTotalWorkers int             `json:"max_total_workers"`
	Held            int             `json:"held"` // workers counted against the cap now, mins included
	Functions       []ShareStanding `json:"functions"`
}

// ShareStanding is one function's part of MAX_TOTAL_WORKERS.
type ShareStanding struct {
	Name     string `json:"name"`
	Min      int    `json:"min"`
	Max      int    `json:"max"`
	Workers  int    `json:"workers"`  // its pool's size at its last tick
	Want     int    `json:"want"`     // its autoscaler's wish at its last tick
	Allotted int    `json:"allotted"` // its size in the latest decision
	Limit    int    `json:"limit"`    // the most it may grow to now
	// IdleSeconds is the time since its last call; -1 when it has had none.
	// Idle functions give up workers first when the cap is reached.
	IdleSeconds float64 `json:"idle_s"`
}

// CloudStatus is the offload client: whether it takes calls, its breaker and
// its counters.
type CloudStatus struct {
	Ready      bool          `json:"ready"`
	Current    bool          `json:"current"` // the cloud runs the workers' version
	Breaker    string        `json:"breaker"`
	Calls      int64         `json:"calls"`
	Succeeded  int64         `json:"succeeded"`
	Failed     int64         `json:"failed"`
	Retries    int64         `json:"retries"`
	Throttled  int64         `json:"throttled"`
	Rejected   int64         `json:"rejected"`
	ColdStarts int64         `json:"cold_starts"`
	Pings      int64         `json:"pings"`            // keep-warm pings sent (CLOUD_KEEP_WARM)
	Budget     *BudgetStatus `json:"budget,omitempty"` // nil when no cap is set
}

// BudgetStatus is the cloud budget (CLOUD_MAX_RPS, CLOUD_MAX_COST_PER_HOUR)
// and what it allowed: calls and their estimated cost since lb started, and
// the share of its burst spent now (1: calls wait for it).
type BudgetStatus struct {
	MaxRPS         float64 `json:"max_rps"`
	MaxCostPerHour float64 `json:"max_cost_per_hour"`
	Calls          int64   `json:"calls"`
	SpentUSD       float64 `json:"spent_usd"`
	Used           float64 `json:"used"`
}
