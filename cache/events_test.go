package cache

import (
	"fmt"
	"slices"
	"testing"
)

// An event queue reads oldest (lowest id) first whatever the order of writes, keeps
// each queue apart, removes by id, and trims its oldest beyond a bound.
func TestEventQueuesAreOrderedSeparateAndBounded(t *testing.T) {
	s := testStore(t, nil)
	var items []EventItem
	for _, i := range []int{3, 1, 4, 0, 2} {
		id := fmt.Sprintf("%04d", i)
		items = append(items, EventItem{Queue: "a", ID: id, Body: []byte("a" + id)}, EventItem{Queue: "ab", ID: id, Body: []byte("ab" + id)})
	}
	if err := s.Enqueue(items); err != nil {
		t.Fatal(err)
	}
	if err := s.Enqueue([]EventItem{{Queue: "a", ID: "x\x00y"}}); err == nil {
		t.Error("an id with NUL was queued")
	}
	ids := func(q EventQueue, n int) []string {
		evs, err := q.Oldest(n)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range evs {
			if string(e.Body) != q.name+e.ID {
				t.Errorf("%s/%s holds %q", q.name, e.ID, e.Body)
			}
			out = append(out, e.ID)
		}
		return out
	}
	a, ab := s.EventQueue("a"), s.EventQueue("ab")
	if got := ids(a, 3); !slices.Equal(got, []string{"0000", "0001", "0002"}) {
		t.Errorf("oldest three of a: %v", got)
	}
	if err := a.Remove("0000", "0002", "missing"); err != nil {
		t.Fatal(err)
	}
	if got := ids(a, 10); !slices.Equal(got, []string{"0001", "0003", "0004"}) {
		t.Errorf("a after removes: %v", got)
	}
	dropped, remain, err := ab.Trim(2)
	if err != nil || !slices.Equal(dropped, []string{"0000", "0001", "0002"}) || remain != 2 {
		t.Errorf("trim: dropped %v, %d remain, %v", dropped, remain, err)
	}
	if got := ids(ab, 10); !slices.Equal(got, []string{"0003", "0004"}) {
		t.Errorf("ab after trim: %v", got)
	}
	if n, _ := a.Len(); n != 3 {
		t.Errorf("a holds %d, want 3 (trimming ab leaves a alone)", n)
	}
	if dropped, remain, _ := a.Trim(5); dropped != nil || remain != 3 {
		t.Errorf("a trim within bound: %v %d", dropped, remain)
	}
}
