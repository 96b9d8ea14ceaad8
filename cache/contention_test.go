package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// A collection deleting many manifests while pushes keep referencing a layer one of
// them lists must finish, and collect them. The collection's batch reads and writes
// the layer's reference count last (its manifest's digest sorts last), which every
// push changes meanwhile: a batch of 256 deletions in one transaction conflicted with
// some push on every attempt (a 30-minute soak on PostgreSQL saw one collection retry
// for 22 minutes and fail with 40001, and the retention runs behind it time out).
func TestCollectionFinishesWhilePushesShareItsLayers(t *testing.T) {
	s, clock := clockedStore(t)
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

// clockedStore is a test store on a clock the test moves.
func clockedStore(t *testing.T) (*Store, *atomic.Int64) {
	clock := new(atomic.Int64)
	clock.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return testStore(t, func() time.Time { return time.Unix(0, clock.Load()) }), clock
}

// storeBlobs stores n blobs no manifest lists in r/app, and returns their digests and
// their bytes in all.
func storeBlobs(t *testing.T, s *Store, n int) (ds []oci.Digest, total int64) {
	t.Helper()
	for i := range n {
		b := []byte(fmt.Sprintf("blob %d", i))
		ds = append(ds, putBlob(t, s, "r", "app", b))
		total += int64(len(b))
	}
	return ds, total
}

// chaosDB wraps the store's Badger index: transactions run through TryUpdate get a
// (real, driver-retried) conflict injected after fn ran, as decided by inject; what fn
// wrote is then discarded by the driver exactly as on a real conflict.
type chaosDB struct {
	index.DB
	inject func(attempts int, calls int64) error
	calls  atomic.Int64
	tries  atomic.Int64
}

func (c *chaosDB) UpdateFreeing(fn func(index.Txn) error) error { return index.UpdateFreeing(c.DB, fn) }
func (c *chaosDB) TryUpdate(fn func(index.Txn) error, freeing bool, attempts int) error {
	c.tries.Add(1)
	return c.DB.(index.Trier).TryUpdate(func(txn index.Txn) error {
		if err := fn(txn); err != nil {
			return err
		}
		if c.inject != nil {
			return c.inject(attempts, c.calls.Add(1))
		}
		return nil
	}, freeing, attempts)
}

var injectedConflict = fmt.Errorf("injected: %w", badger.ErrConflict)

// Every multi-item transaction (splitUpdate's bounded attempts) conflicts.
func multiConflicts(attempts int, _ int64) error {
	if attempts < index.Attempts {
		return injectedConflict
	}
	return nil
}

func chaos(t *testing.T, s *Store) *chaosDB {
	if _, ok := s.db.(interface{ Dir() string }); !ok {
		t.Skip("chaos wrapper is for the Badger index")
	}
	c := &chaosDB{DB: s.db}
	s.db = c
	t.Cleanup(func() { s.db = c.DB })
	return c
}

// deleteContents split down to single items collects every manifest exactly once and
// releases their layers exactly once.
func TestACollectionSplitToSingleManifestsCountsEachOnce(t *testing.T) {
	s, clock := clockedStore(t)
	ctx := context.Background()
	shared := []byte("shared layer")
	sd := putBlob(t, s, "r", "app", shared)
	putManifest(t, s, "r", "app", imageManifest(desc(mtConfig, putBlob(t, s, "r", "app", []byte("{}")), 2), desc(mtLayer, sd, len(shared))), false, "keep")
	const n = 40
	var gone []oci.Digest
	for i := range n {
		cfg := []byte(fmt.Sprintf(`{"i":%d}`, i))
		m := imageManifest(desc(mtConfig, putBlob(t, s, "r", "app", cfg), len(cfg)), desc(mtLayer, sd, len(shared)))
		gone = append(gone, putManifest(t, s, "r", "app", m, false))
	}
	for _, d := range gone {
		if err := s.DeleteManifest(ctx, "r", "app", d, nil); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(int64(61 * time.Minute))
	c := chaos(t, s)
	c.inject = multiConflicts
	rep, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Manifests != n {
		t.Errorf("collected %d manifests, want %d", rep.Manifests, n)
	}
	if b, _ := refs(t, s, sd); b != 1 {
		t.Errorf("shared layer refs %d, want 1 (the kept manifest)", b)
	}
	t.Logf("report %+v, %d TryUpdate calls", rep, c.tries.Load())
	c.inject = nil
	clean(t, s)
}

// deleteBlobs split down to single items: report equals records gone; files of gone
// records are gone.
func TestACollectionSplitToSingleBlobsDeletesEachOnce(t *testing.T) {
	s, clock := clockedStore(t)
	ctx := context.Background()
	const n = 40
	ds, total := storeBlobs(t, s, n)
	clock.Add(int64(61 * time.Minute))
	c := chaos(t, s)
	c.inject = multiConflicts
	rep, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Blobs != n || rep.Bytes != total {
		t.Errorf("report %+v, want %d blobs %d bytes", rep, n, total)
	}
	for _, d := range ds {
		if b, _ := refs(t, s, d); b != -1 {
			t.Errorf("blob %s kept", d)
		}
		if _, err := s.blobs.Stat(ctx, d); !errors.Is(err, blobstore.ErrNotExist) {
			t.Errorf("blob %s file: %v", d, err)
		}
	}
	c.inject = nil
	clean(t, s)
}

// One blob's own transaction fails (a transient index error) after the batch was split
// on contention and other halves committed: the collection reports what it deleted,
// and deletes the files of the records it deleted.
func TestACollectionFailingAfterSplitHalvesCommittedDeletesTheirFiles(t *testing.T) {
	s, clock := clockedStore(t)
	ctx := context.Background()
	const n = 8
	ds, _ := storeBlobs(t, s, n)
	clock.Add(int64(61 * time.Minute))
	c := chaos(t, s)
	var singles atomic.Int64
	c.inject = func(attempts int, _ int64) error {
		if attempts < index.Attempts {
			return injectedConflict
		}
		// The last single-item transaction (after 7 committed) meets an index outage.
		if singles.Add(1) == n {
			return oci.ErrIndexUnavailable.Withf("injected outage")
		}
		return nil
	}
	rep, err := s.CollectGarbage(ctx, GCOptions{Grace: time.Hour})
	t.Logf("collection: %+v, %v", rep, err)
	recordsGone, orphanFiles := 0, 0
	for _, d := range ds {
		b, _ := refs(t, s, d)
		_, serr := s.blobs.Stat(ctx, d)
		if b == -1 {
			recordsGone++
			if serr == nil {
				orphanFiles++
			}
		}
	}
	t.Logf("records deleted: %d; their files left behind: %d", recordsGone, orphanFiles)
	if rep.Blobs != recordsGone {
		t.Errorf("the report says %d blobs collected, %d records were deleted", rep.Blobs, recordsGone)
	}
	if orphanFiles > 0 {
		t.Errorf("%d files of deleted records left behind (until a later collection's orphan sweep)", orphanFiles)
	}
}

// Pull records flushed through split transactions are counted once.
func TestPullRecordsFlushedThroughSplitTransactionsCountOnce(t *testing.T) {
	s := testStore(t, nil)
	ctx := context.Background()
	var ds []oci.Digest
	for i := range 20 {
		cfg := []byte(fmt.Sprintf(`{"i":%d}`, i))
		ds = append(ds, putManifest(t, s, "r", "app", imageManifest(desc(mtConfig, putBlob(t, s, "r", "app", cfg), len(cfg))), false, oci.Tag(fmt.Sprintf("t%d", i))))
	}
	for range 3 {
		for i, d := range ds {
			s.RecordPull("r", "app", fmt.Sprintf("t%d", i), d)
		}
	}
	c := chaos(t, s)
	c.inject = multiConflicts
	if err := s.FlushAccess(); err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		m, tg, err := s.PullInfo(ctx, "r", "app", fmt.Sprintf("t%d", i), d)
		if err != nil {
			t.Fatal(err)
		}
		if m.Pulls != 3 || tg.Pulls != 3 {
			t.Errorf("%s: manifest pulls %d, tag pulls %d, want 3 and 3", d, m.Pulls, tg.Pulls)
		}
	}
}
