package pool

import (
	"fmt"
	"time"
)

// view is what the reconciler decides on: the pool's members and targets at
// one moment, copied under Pool.mu.
type view struct {
	follower bool // another lb replica controls the containers, or the engine does (managed)
	// managed: the workers are a service's replicas (ServiceBackend); with
	// controller, this lb may still have a failed one replaced.
	managed, controller bool
	desired             int       // members of the current version wanted
	key                 string    // Key of the function new members run
	version             int64     // its version, for the drain reason of a roll
	nextTry             time.Time // no start before this (backoff after failed starts)
	members             []memberView
}

// memberView is one member as plan sees it, in the members' stable order.
type memberView struct {
	state        State
	key          string // Key of the function it runs
	inFlight     int
	hasContainer bool // its start got as far as a container
	gone         bool // its worker left the backend's list
}

// actionKind is what plan asks of one member, or of the pool.
type actionKind uint8

const (
	// actRemove takes a failed or drained member off the list and removes
	// its container.
	actRemove actionKind = iota + 1
	// actForget takes a member off the list and leaves its container: a
	// follower's (the controller removes it), one a service's engine
	// stops, or a start that failed before the container existed.
	actForget
	// actStart starts a member of the current version.
	actStart
	// actDrain takes a ready member out of rotation; once idle it is removed.
	actDrain
)

// action is one step of a plan.
type action struct {
	kind   actionKind
	member int    // index into view.members; unused by actStart
	reason string // actDrain: why, for the log
}

// plan moves the pool toward the desired state, in this order:
//  1. failed members and drained idle ones leave the list (their containers
//     are removed, unless this lb follows another or the workers are a
//     service's: then only the controller has a failed worker that is
//     still listed removed, which makes the engine replace it);
//  2. a follower stops there: the controller starts, drains and rolls;
//  3. missing members of the current version start, unless a failed start's
//     backoff (nextTry) is not over at now;
//  4. above the desired size, idle ready members of the current version
//     drain, newest first;
//  5. roll: each old-version ready member drains once a ready member of the
//     current version stands in for it, idle ones first.
//
// plan is pure: it reads only v and now.
func plan(v view, now time.Time) []action {
	var acts []action
	live := make([]int, 0, len(v.members)) // members that stay on the list
	for i, m := range v.members {
		gone := m.state == StateFailed || (m.state == StateDraining && m.inFlight == 0)
		switch {
		case !gone:
			live = append(live, i)
		case v.managed && v.controller && m.state == StateFailed && m.hasContainer && !m.gone:
			acts = append(acts, action{kind: actRemove, member: i})
		case v.follower || (m.state == StateFailed && !m.hasContainer):
			acts = append(acts, action{kind: actForget, member: i})
		default:
			acts = append(acts, action{kind: actRemove, member: i})
		}
	}
	if v.follower {
		return acts
	}

	var current, readyCurrent, old []int
	for _, i := range live {
		m := v.members[i]
		switch {
		case m.state == StateDraining:
		case m.key == v.key:
			current = append(current, i)
			if m.state == StateReady {
				readyCurrent = append(readyCurrent, i)
			}
		case m.state == StateReady:
			old = append(old, i)
		}
	}

	if need := v.desired - len(current); need > 0 && !now.Before(v.nextTry) {
		for range need {
			acts = append(acts, action{kind: actStart})
		}
	}

	if surplus := len(current) - v.desired; surplus > 0 {
		for j := len(readyCurrent) - 1; j >= 0 && surplus > 0; j-- {
			if i := readyCurrent[j]; v.members[i].inFlight == 0 {
				acts = append(acts, action{kind: actDrain, member: i, reason: "scale down"})
				surplus--
			}
		}
	}

	if keepOld := max(0, v.desired-len(readyCurrent)); len(old) > keepOld {
		drop := len(old) - keepOld
		why := fmt.Sprintf("roll to version %d", v.version)
		drained := make(map[int]bool, drop)
		for pass := 0; pass < 2 && drop > 0; pass++ {
			for _, i := range old {
				if drop == 0 {
					break
				}
				if !drained[i] && (pass == 1 || v.members[i].inFlight == 0) {
					acts = append(acts, action{kind: actDrain, member: i, reason: why})
					drained[i] = true
					drop--
				}
			}
		}
	}
	return acts
}
