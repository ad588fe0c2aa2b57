package sim

// Event kinds.
const (
	evArrival uint8 = iota
	evLocalDone
	evLocalTimeout
	evCloudDone
	evWorkerReady
	evTick
	evRedecide
)

type event struct {
	t    int64  // nanoseconds since the start of the run
	seq  uint64 // insertion order breaks ties, so runs are deterministic
	a, b int32
	f    int32 // the function (arrivals and ticks)
	kind uint8
}

func (e event) less(o event) bool {
	return e.t < o.t || e.t == o.t && e.seq < o.seq
}

// eventHeap is a binary min-heap of events by (t, seq), without the
// interface boxing of container/heap.
type eventHeap struct {
	ev  []event
	seq uint64
}

func (h *eventHeap) push(e event) {
	h.seq++
	e.seq = h.seq
	h.ev = append(h.ev, e)
	i := len(h.ev) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !h.ev[i].less(h.ev[p]) {
			break
		}
		h.ev[i], h.ev[p] = h.ev[p], h.ev[i]
		i = p
	}
}

func (h *eventHeap) pop() event {
	top := h.ev[0]
	n := len(h.ev) - 1
	h.ev[0] = h.ev[n]
	h.ev = h.ev[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && h.ev[r].less(h.ev[l]) {
			m = r
		}
		if !h.ev[m].less(h.ev[i]) {
			break
		}
		h.ev[i], h.ev[m] = h.ev[m], h.ev[i]
		i = m
	}
	return top
}

func (h *eventHeap) len() int { return len(h.ev) }
