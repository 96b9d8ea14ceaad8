package index_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/test/mountns"
)

// Writes admitted together cannot take the index's filesystem under its reserve: each
// holds its bytes until Badger has written them, and those that would not fit beside
// the others are refused. Checked once each against the free space alone, a burst of
// large values got through together and Badger, writing them through the memory map
// of its value log, died of SIGBUS on the full filesystem (this test then fails with
// the crash of the process it runs in).
func TestBadgerKeepsItsReserveUnderABurstOfLargeWrites(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	dir := t.TempDir()
	mountns.Tmpfs(t, dir, 16<<20)
	db, err := index.OpenBadger(index.BadgerOptions{Dir: dir, MemTableSize: 1 << 20}) // a reserve of 4 MiB
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// 40 values of 512 KiB (20 MiB, in the value log): every writer is inside its
	// transaction, past the first check, before any commits.
	const writers, size = 40, 512 << 10
	var inside, done sync.WaitGroup
	inside.Add(writers)
	release := make(chan struct{})
	errs := make([]error, writers)
	for i := range writers {
		done.Add(1)
		go func() {
			defer done.Done()
			first := sync.OnceFunc(func() { inside.Done(); <-release })
			value := make([]byte, size)
			value[0] = byte(i)
			errs[i] = db.Update(func(txn index.Txn) error {
				first()
				return txn.Set(fmt.Appendf(nil, "value%02d", i), value)
			})
		}()
	}
	inside.Wait()
	close(release)
	done.Wait()
	written := 0
	for i, err := range errs {
		switch {
		case err == nil:
			written++
			if v, err := index.GetOne(db, fmt.Appendf(nil, "value%02d", i)); err != nil || len(v) != size || v[0] != byte(i) {
				t.Errorf("value %d, written: %d bytes, %v", i, len(v), err)
			}
		case errors.Is(err, oci.ErrStorageFull):
			if _, err := index.GetOne(db, fmt.Appendf(nil, "value%02d", i)); !errors.Is(err, index.ErrNotFound) {
				t.Errorf("value %d, refused, is there: %v", i, err)
			}
		default:
			t.Errorf("value %d: %v", i, err)
		}
	}
	free := mountns.Free(t, dir)
	t.Logf("%d of %d values written, %d KiB free", written, writers, free>>10)
	if written == 0 || written == writers {
		t.Errorf("%d of %d values of 512 KiB written on 16 MiB", written, writers)
	}
	if free < db.Reserve() {
		t.Errorf("%d KiB free after the burst, under the reserve of %d KiB", free>>10, db.Reserve()>>10)
	}
}

// The storage-full message reads true: free space is rounded down, never up to the
// size it is under (63.9 MiB was "64 MiB free, under the 64 MiB the index keeps").
func TestTheStorageFullMessageRoundsFreeSpaceDown(t *testing.T) {
	free := int64(64<<20 - 100<<10)
	db, err := index.OpenBadger(index.BadgerOptions{Dir: t.TempDir(), FreeSpace: func() (int64, error) { return free, nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(txn index.Txn) error { return txn.Set([]byte("k"), []byte("v")) })
	if !errors.Is(err, oci.ErrStorageFull) || !strings.Contains(err.Error(), "63.9 MiB free, under the 64 MiB") {
		t.Errorf("the message with 63.9 MiB free under a reserve of 64: %v", err)
	}
}
