package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/oci"
)

// A collection deleting many manifests while pushes keep referencing a layer one of
// them lists must finish, and collect them. The collection's batch reads and writes
// the layer's reference count last (its manifest's digest sorts last), which every
// push changes meanwhile: a batch of 256 deletions in one transaction conflicted with
// some push on every attempt (a 30-minute soak on PostgreSQL saw one collection retry
// for 22 minutes and fail with 40001, and the retention runs behind it time out).
func TestCollectionFinishesWhilePushesShareItsLayers(t *testing.T) {
	var clock atomic.Int64
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	s := testStore(t, func() time.Time { return time.Unix(0, clock.Load()) })
	ctx := context.Background()
	shared := []byte("a layer the pushers share")
	sd := putBlob(t, s, "r", "app", shared)
	image := func(config string, layers ...[]byte) []byte {
		cd := putBlob(t, s, "r", "app", []byte(config))
		var ds []string
		for _, l := range layers {
			ds = append(ds, desc(mtLayer, putBlob(t, s, "r", "app", l), len(l)))
		}
		return imageManifest(desc(mtConfig, cd, len(config)), ds...)
	}
	const n = 256
	var gone []oci.Digest
	for i := 0; len(gone) < n; i++ {
		last := len(gone) == n-1
		layers := [][]byte{[]byte(fmt.Sprintf("layer %d", i))}
		if last {
			layers = append(layers, shared)
		}
		m := image(fmt.Sprintf(`{"old":%d}`, i), layers...)
		if d := oci.FromBytes(oci.SHA256, m); (d >= "sha256:f") != last {
			continue
		}
		gone = append(gone, putManifest(t, s, "r", "app", m, false))
	}
	for _, d := range gone {
		if err := s.DeleteManifest(ctx, "r", "app", d, nil); err != nil {
			t.Fatal(err)
		}
	}
	// An hour and a bit later, the collection (grace 1h) runs while two pushers keep
	// pushing images of the same layer; what they overwrite is inside the grace.
	clock.Add(int64(61 * time.Minute))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pushed atomic.Int64
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				m := image(fmt.Sprintf(`{"pusher":%d,"i":%d}`, w, i), shared)
				if _, err := tryPutManifest(s, "r", "app", m, false, oci.Tag(fmt.Sprintf("p%d", w))); err != nil {
					t.Error(err)
					return
				}
				pushed.Add(1)
			}
		})
	}
	// The pushers are under way before the collection starts.
	for pushed.Load() < 4 {
		time.Sleep(time.Millisecond)
	}
	rep, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("collection: %v (%d pushes meanwhile)", err, pushed.Load())
	}
	if rep.Manifests != n {
		t.Errorf("collected %d manifests, want the %d deleted before the grace", rep.Manifests, n)
	}
	for _, d := range append(gone[:2:2], gone[n-1]) {
		if _, m := refs(t, s, d); m != -1 {
			t.Errorf("manifest %s still has a record", d)
		}
	}
	if b, _ := refs(t, s, sd); b < 1 {
		t.Errorf("the shared layer has %d references, want the pushers' tags' at least", b)
	}
	t.Logf("%d pushes during the collection", pushed.Load())
	clean(t, s)
}
