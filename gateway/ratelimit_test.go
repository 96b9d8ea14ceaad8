package gateway

import (
	"net/netip"
	"testing"
	"time"
)

// The rate limiter keeps at most maxRateBuckets clients: past it, clients whose
// buckets are full again (as good as new) go first, then an eighth of the rest; a
// client still over its rate keeps its empty bucket while idle ones can make room.
func TestRateBucketsAreBounded(t *testing.T) {
	var r rateLimiter
	now := time.Now()
	client := func(i int) netip.Prefix {
		return addrKey(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	// A client that used up its burst, then a full map of one-request clients.
	r.allow(client(0), 1, 2, now)
	if ok, _ := r.allow(client(0), 1, 2, now); !ok {
		t.Fatal("the second request of a burst of 2 was refused")
	}
	if ok, wait := r.allow(client(0), 1, 2, now); ok || wait <= 0 || wait > time.Second {
		t.Fatalf("a third request at once: allowed %v, wait %v", ok, wait)
	}
	for i := 1; i < maxRateBuckets; i++ {
		r.allow(client(i), 1, 2, now)
	}
	if len(r.buckets) != maxRateBuckets {
		t.Fatalf("%d buckets, want %d", len(r.buckets), maxRateBuckets)
	}
	// 1.5 s on, the one-request clients are full again; client 0 is not (2 taken,
	// 1.5 refilled).
	later := now.Add(1500 * time.Millisecond)
	r.allow(client(maxRateBuckets), 1, 2, later)
	if len(r.buckets) > maxRateBuckets {
		t.Errorf("%d buckets past the bound %d", len(r.buckets), maxRateBuckets)
	}
	if _, kept := r.buckets[client(0)]; !kept || len(r.buckets) != 2 {
		t.Errorf("after the sweep: %d buckets, client 0 kept: %v; want only it and the newcomer", len(r.buckets), kept)
	}
	// Every client busy: an eighth goes to make room, never more than the bound.
	for i := range 2 * maxRateBuckets {
		r.allow(client(i), 1, 2, later)
		r.allow(client(i), 1, 2, later)
		if len(r.buckets) > maxRateBuckets {
			t.Fatalf("%d buckets past the bound %d", len(r.buckets), maxRateBuckets)
		}
	}
	// A new rate (a reload) starts afresh.
	if ok, _ := r.allow(client(0), 5, 10, later); !ok || len(r.buckets) != 1 {
		t.Errorf("after a change of rate: allowed %v, %d buckets", ok, len(r.buckets))
	}
}
