package cache

import (
	"sync"
	"testing"

	"github.com/dockyard/dockyard/oci"
)

// Many pulls of one manifest at once fill the cache once: what it counts as held is
// what it holds, or it would shrink (or empty itself on every add) as pulls race.
func TestManifestCacheCountsARacedEntryOnce(t *testing.T) {
	c := newManifestCache(1 << 30)
	b := make([]byte, 1000)
	const rounds = 1000
	for round := range rounds {
		b[0], b[1] = byte(round), byte(round>>8)
		d, v := oci.FromBytes(oci.SHA256, b), append([]byte(nil), b...)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				c.add(d, v)
			}()
		}
		close(start)
		wg.Wait()
	}
	if held, want := c.size(), int64(c.len())*entryCost(oci.FromBytes(oci.SHA256, b), b); held != want {
		t.Errorf("the cache counts %d bytes for %d entries of one size", held, c.len())
	}
}

// The bound covers what an entry costs besides its bytes (its digest, list and map
// nodes, at least 100 bytes): tiny manifests cannot fill memory by the million.
func TestManifestCacheBoundCountsEachEntrysCost(t *testing.T) {
	const bound = 64 << 10
	c := newManifestCache(bound)
	for i := range 10000 {
		b := []byte{byte(i), byte(i >> 8)}
		c.add(oci.FromBytes(oci.SHA256, b), b)
	}
	if n := c.len(); n*100 > bound {
		t.Errorf("%d two-byte manifests held in a %d-byte cache", n, bound)
	}
}
