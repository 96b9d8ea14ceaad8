package cache

import (
	"context"
	"testing"
	"time"

	"github.com/dockyard/dockyard/oci"
)

// Evicting one of two cached images that share a layer keeps the shared layer linked
// and pullable; evicting both frees it. Either way the eviction reports exactly the
// bytes the next collection frees.
func TestEvictionKeepsLayersOtherManifestsListAndCountsOnlyFreedBytes(t *testing.T) {
	for _, both := range []bool{false, true} {
		c := &clock{now: time.Unix(1e9, 0)}
		s := testStore(t, c.Now)
		ctx := context.Background()
		shared := []byte("a base layer both images share, and a fairly long one at that")
		sd := putBlob(t, s, "up", "lib/a", shared)
		mk := func(name string) (manifest []byte, own []oci.Digest, ownBytes int64) {
			config, layer := []byte(`{"name":"`+name+`"}`), []byte("the layer only "+name+" has")
			cd, ld := putBlob(t, s, "up", "lib/a", config), putBlob(t, s, "up", "lib/a", layer)
			m := imageManifest(desc(mtConfig, cd, len(config)), desc(mtLayer, sd, len(shared)), desc(mtLayer, ld, len(layer)))
			return m, []oci.Digest{cd, ld}, int64(len(config) + len(layer))
		}
		old, oldOwn, oldBytes := mk("old")
		putManifest(t, s, "up", "lib/a", old, true, "old")
		c.Add(time.Minute)
		recent, _, recentBytes := mk("recent")
		putManifest(t, s, "up", "lib/a", recent, true, "recent")
		c.Add(time.Minute)
		limit := int64(len(shared)) + oldBytes + recentBytes - 1 // one image too many
		want, evicted := oldBytes, 1
		if both {
			limit, want, evicted = 1, int64(len(shared))+oldBytes+recentBytes, 2
		}
		rep, err := s.EvictCache(ctx, "up", limit, 0)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Manifests != evicted || rep.Bytes != want {
			t.Errorf("both=%v: evicted %d manifests and %d bytes, want %d and %d", both, rep.Manifests, rep.Bytes, evicted, want)
		}
		if _, err := s.StatBlob(ctx, "up", "lib/a", sd); err != nil && !both {
			t.Errorf("the shared layer was unlinked while the recent image lists it: %v", err)
		}
		for _, d := range oldOwn {
			if _, err := s.StatBlob(ctx, "up", "lib/a", d); err == nil {
				t.Errorf("blob %s only the evicted image listed is still linked", d)
			}
		}
		c.Add(time.Hour)
		gc, err := s.CollectGarbage(ctx, GCOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Bytes != gc.Bytes {
			t.Errorf("both=%v: eviction reported %d bytes freed, the collection freed %d", both, rep.Bytes, gc.Bytes)
		}
		clean(t, s)
	}
}
