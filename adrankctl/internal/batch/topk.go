package batch

import (
	"strings"

	"github.com/adrank/adrank/platform/snapshot"
)

// top keeps the best k entries pushed into it: a min-heap on "worse", so
// the root is the entry to drop first.
type top struct {
	k int
	h []snapshot.Entry
}

// worse reports whether a ranks below b (lower pCTR; ties: larger ad ID),
// the order snapshot.Sort uses.
func worse(a, b snapshot.Entry) bool {
	if a.Pctr != b.Pctr {
		return a.Pctr < b.Pctr
	}
	return strings.Compare(a.AdID, b.AdID) > 0
}

func (t *top) push(e snapshot.Entry) {
	if len(t.h) < t.k {
		t.h = append(t.h, e)
		t.up(len(t.h) - 1)
		return
	}
	if !worse(t.h[0], e) {
		return
	}
	t.h[0] = e
	t.down(0)
}

func (t *top) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !worse(t.h[i], t.h[p]) {
			return
		}
		t.h[i], t.h[p] = t.h[p], t.h[i]
		i = p
	}
}

func (t *top) down(i int) {
	for {
		l, m := 2*i+1, i
		if l < len(t.h) && worse(t.h[l], t.h[m]) {
			m = l
		}
		if r := l + 1; r < len(t.h) && worse(t.h[r], t.h[m]) {
			m = r
		}
		if m == i {
			return
		}
		t.h[i], t.h[m] = t.h[m], t.h[i]
		i = m
	}
}

// sorted returns the kept entries best first, and resets t.
func (t *top) sorted() []snapshot.Entry {
	out := t.h
	snapshot.Sort(out)
	t.h = nil
	return out
}
