package policy

import (
	"sync"
	"testing"
)

func members(inFlight ...int) []Member {
	ms := make([]Member, len(inFlight))
	for i, n := range inFlight {
		ms[i] = Member{Name: string(rune('a' + i)), InFlight: n, Capacity: 1}
	}
	return ms
}

func TestNewScheduler(t *testing.T) {
	for _, tc := range []struct {
		name    string
		wantErr bool
	}{
		{"", false}, {"round-robin", false}, {"least-connections", false}, {"random", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewScheduler(tc.name)
			if (err != nil) != tc.wantErr || (err == nil) == (s == nil) {
				t.Fatalf("NewScheduler(%q) = %v, %v", tc.name, s, err)
			}
		})
	}
}

func TestRoundRobin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps [][]Member // members passed at each pick
		want  []int
	}{
		{"empty", [][]Member{nil, {}}, []int{-1, -1}},
		{"single", [][]Member{members(0), members(0)}, []int{0, 0}},
		{"single full", [][]Member{members(1)}, []int{-1}},
		{"in order", [][]Member{members(0, 0, 0), members(0, 0, 0), members(0, 0, 0), members(0, 0, 0)}, []int{0, 1, 2, 0}},
		{"skips full", [][]Member{members(0, 1, 0), members(0, 1, 0), members(0, 1, 0)}, []int{0, 2, 0}},
		{"skip resumes after pick", [][]Member{members(1, 1, 0, 0), members(0, 0, 0, 0)}, []int{2, 3}},
		{"all full", [][]Member{members(1, 1, 1)}, []int{-1}},
		{"zero capacity is full", [][]Member{{{Name: "a", Capacity: 0}, {Name: "b", Capacity: 2, InFlight: 1}}}, []int{1}},
		{"pool shrinks", [][]Member{members(0, 0, 0), members(0, 0, 0), members(0)}, []int{0, 1, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var rr RoundRobin
			for i, ms := range tc.steps {
				if got := rr.Pick(ms); got != tc.want[i] {
					t.Fatalf("pick %d: got %d, want %d", i, got, tc.want[i])
				}
			}
		})
	}
}

func TestLeastConnections(t *testing.T) {
	c := func(inFlight, capacity int) Member { return Member{InFlight: inFlight, Capacity: capacity} }
	for _, tc := range []struct {
		name string
		ms   []Member
		want []int // acceptable answers
	}{
		{"empty", nil, []int{-1}},
		{"least", []Member{c(3, 4), c(1, 4), c(2, 4)}, []int{1}},
		{"idle wins", []Member{c(3, 4), c(0, 4), c(2, 4)}, []int{1}},
		{"all full", []Member{c(4, 4), c(1, 1)}, []int{-1}},
		{"skips full", []Member{c(1, 1), c(3, 4)}, []int{1}},
		{"ratio", []Member{c(2, 2), c(1, 8), c(1, 2)}, []int{1}},
		{"ties", []Member{c(1, 2), c(1, 2)}, []int{0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lc LeastConnections
			got := lc.Pick(tc.ms)
			for _, w := range tc.want {
				if got == w {
					return
				}
			}
			t.Fatalf("got %d, want one of %v", got, tc.want)
		})
	}
}

func TestLeastConnectionsSpreadsTies(t *testing.T) {
	var lc LeastConnections
	seen := map[int]int{}
	for range 30 {
		seen[lc.Pick(members(0, 0, 0))]++
	}
	if len(seen) != 3 || seen[0] != 10 {
		t.Fatalf("ties not rotated: %v", seen)
	}
}

// TestSchedulersConcurrent runs Pick from many goroutines under -race and
// checks every answer is a free member.
func TestSchedulersConcurrent(t *testing.T) {
	for _, name := range []string{SchedulerRoundRobin, SchedulerLeastConnections} {
		t.Run(name, func(t *testing.T) {
			s, err := NewScheduler(name)
			if err != nil {
				t.Fatal(err)
			}
			ms := members(0, 1, 0, 1, 0)
			var wg sync.WaitGroup
			errs := make(chan int, 8)
			for range 8 {
				wg.Go(func() {
					for range 1000 {
						if i := s.Pick(ms); i < 0 || ms[i].InFlight != 0 {
							errs <- i
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for i := range errs {
				t.Fatalf("picked %d", i)
			}
		})
	}
}
