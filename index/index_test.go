package index_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/index/pgtest"
	"github.com/dockyard/dockyard/oci"
	"github.com/dockyard/dockyard/test/mountns"
)

var pg *pgtest.Server

func TestMain(m *testing.M) {
	if mountns.Inside() {
		os.Exit(m.Run()) // one test again, in a mount namespace: no shared servers
	}
	pgtest.Main(m, &pg)
}

// each runs a case against Badger and against PostgreSQL (a fresh database each).
func each(t *testing.T, fn func(t *testing.T, db index.DB)) {
	t.Run("badger", func(t *testing.T) {
		db, err := index.OpenBadger(index.BadgerOptions{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		fn(t, db)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.Need(t, pg).NewDatabase(t)
		db, err := index.OpenPostgres(context.Background(), index.PostgresOptions{DSN: dsn, MaxConns: 32})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		fn(t, db)
	})
}

func TestGetSetDeleteScan(t *testing.T) {
	each(t, func(t *testing.T, db index.DB) {
		err := db.Update(func(txn index.Txn) error {
			for _, k := range []string{"a/1", "a/2", "a/3", "b/1", "a\xff", "a", ""} {
				if k == "" {
					continue
				}
				if err := txn.Set([]byte(k), []byte("v"+k)); err != nil {
					return err
				}
			}
			return txn.Set([]byte("empty"), nil)
		})
		if err != nil {
			t.Fatal(err)
		}
		db.View(func(txn index.Txn) error {
			if v, err := txn.Get([]byte("a/2")); err != nil || string(v) != "va/2" {
				t.Errorf("Get a/2: %q %v", v, err)
			}
			if v, err := txn.Get([]byte("empty")); err != nil || len(v) != 0 {
				t.Errorf("Get of an empty value: %q %v", v, err)
			}
			if _, err := txn.Get([]byte("nope")); !errors.Is(err, index.ErrNotFound) {
				t.Errorf("Get of a missing key: %v", err)
			}
			var got []string
			txn.Scan([]byte("a/"), nil, false, func(k, v []byte) error {
				got = append(got, string(k)+"="+string(v))
				return nil
			})
			if fmt.Sprint(got) != "[a/1=va/1 a/2=va/2 a/3=va/3]" {
				t.Errorf("Scan a/: %v", got)
			}
			got = nil
			txn.Scan([]byte("a/"), []byte("a/2"), true, func(k, v []byte) error {
				got = append(got, string(k)+fmt.Sprint(v == nil))
				return nil
			})
			if fmt.Sprint(got) != "[a/2true a/3true]" {
				t.Errorf("Scan a/ from a/2, keys only: %v", got)
			}
			got = nil
			txn.Scan(nil, nil, true, func(k, _ []byte) error { got = append(got, string(k)); return nil })
			if fmt.Sprint(got) != fmt.Sprint([]string{"a", "a/1", "a/2", "a/3", "a\xff", "b/1", "empty"}) {
				t.Errorf("Scan of everything: %q", got)
			}
			stop := errors.New("stop")
			n := 0
			if err := txn.Scan([]byte("a"), nil, true, func(_, _ []byte) error { n++; return stop }); err != stop || n != 1 {
				t.Errorf("a Scan stopped by fn: %v after %d", err, n)
			}
			return nil
		})
		db.Update(func(txn index.Txn) error { return txn.Delete([]byte("a/2")) })
		db.Update(func(txn index.Txn) error { return txn.Delete([]byte("never there")) })
		db.View(func(txn index.Txn) error {
			if _, err := txn.Get([]byte("a/2")); !errors.Is(err, index.ErrNotFound) {
				t.Errorf("a deleted key: %v", err)
			}
			return nil
		})
	})
}

// A scan longer than a page, with the transaction queried inside the callback.
func TestLongScansWithQueriesInside(t *testing.T) {
	each(t, func(t *testing.T, db index.DB) {
		err := db.Update(func(txn index.Txn) error {
			for i := range 1300 {
				if err := txn.Set(fmt.Appendf(nil, "k%05d", i), fmt.Appendf(nil, "%d", i)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		err = db.View(func(txn index.Txn) error {
			return txn.Scan([]byte("k"), nil, false, func(k, v []byte) error {
				if want := fmt.Sprintf("k%05d", n); string(k) != want {
					return fmt.Errorf("key %d is %s, want %s", n, k, want)
				}
				if _, err := txn.Get(k); err != nil {
					return err
				}
				n++
				return nil
			})
		})
		if err != nil || n != 1300 {
			t.Fatalf("scanned %d of 1300: %v", n, err)
		}
	})
}

// Concurrent read-modify-write transactions on one key lose no update: conflicts are
// retried by the driver.
func TestConcurrentUpdatesLoseNothing(t *testing.T) {
	each(t, func(t *testing.T, db index.DB) {
		key := []byte("counter")
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 25 {
					errs <- db.Update(func(txn index.Txn) error {
						var n uint64
						if v, err := txn.Get(key); err == nil {
							n = binary.BigEndian.Uint64(v)
						} else if !errors.Is(err, index.ErrNotFound) {
							return err
						}
						return txn.Set(key, binary.BigEndian.AppendUint64(nil, n+1))
					})
				}
			}()
		}
		go func() { wg.Wait(); close(errs) }()
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		db.View(func(txn index.Txn) error {
			v, err := txn.Get(key)
			if err != nil || binary.BigEndian.Uint64(v) != 200 {
				t.Errorf("counter after 200 increments: %v %v", v, err)
			}
			return nil
		})
	})
}

// A scan over large values (more than a page holds in bytes) sees every key once, in
// order; a keys-only scan past several growing pages too.
func TestScansOfLargeValuesAndManyKeys(t *testing.T) {
	each(t, func(t *testing.T, db index.DB) {
		big := make([]byte, 1<<20)
		err := db.Update(func(txn index.Txn) error {
			for i := range 20 {
				if err := txn.Set(fmt.Appendf(nil, "big/%02d", i), big); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 12000; i += 2000 {
			err := db.Update(func(txn index.Txn) error {
				for j := i; j < i+2000; j++ {
					if err := txn.Set(fmt.Appendf(nil, "many/%05d", j), nil); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		db.View(func(txn index.Txn) error {
			n := 0
			err := txn.Scan([]byte("big/"), nil, false, func(k, v []byte) error {
				if string(k) != fmt.Sprintf("big/%02d", n) || len(v) != len(big) {
					return fmt.Errorf("key %d is %q (%d bytes)", n, k, len(v))
				}
				n++
				return nil
			})
			if err != nil || n != 20 {
				t.Errorf("scan of 20 MiB of values: %d keys, %v", n, err)
			}
			n = 0
			err = txn.Scan([]byte("many/"), []byte("many/00100"), true, func(k, _ []byte) error {
				if string(k) != fmt.Sprintf("many/%05d", n+100) {
					return fmt.Errorf("key %d is %q", n, k)
				}
				n++
				return nil
			})
			if err != nil || n != 11900 {
				t.Errorf("keys-only scan of 11900 keys: %d, %v", n, err)
			}
			return nil
		})
	})
}

// GetOne reads one key outside a transaction, as Get does inside one.
func TestGetOne(t *testing.T) {
	each(t, func(t *testing.T, db index.DB) {
		db.Update(func(txn index.Txn) error {
			txn.Set([]byte("one"), []byte("1"))
			return txn.Set([]byte("empty"), nil)
		})
		if v, err := index.GetOne(db, []byte("one")); err != nil || string(v) != "1" {
			t.Errorf("GetOne: %q %v", v, err)
		}
		if v, err := index.GetOne(db, []byte("empty")); err != nil || v == nil || len(v) != 0 {
			t.Errorf("GetOne of an empty value: %q (nil: %v) %v", v, v == nil, err)
		}
		if _, err := index.GetOne(db, []byte("none")); !errors.Is(err, index.ErrNotFound) {
			t.Errorf("GetOne of a missing key: %v", err)
		}
	})
}

// Badger writes through memory maps, and a full filesystem under them kills the
// process: a write that would take the free space under the index's reserve is refused
// with the storage-full error before it reaches Badger, reads go on, and writes are
// taken again once there is room, without reopening. Writes that free space go on
// under the reserve, down to a floor of half of it; opening, which writes what a
// flush does, is refused under that floor.
func TestBadgerRefusesWritesUnderItsReserve(t *testing.T) {
	var free atomic.Int64
	free.Store(1 << 40)
	opts := index.BadgerOptions{Dir: t.TempDir(), MemTableSize: 1 << 20,
		FreeSpace: func() (int64, error) { return free.Load(), nil }}
	db, err := index.OpenBadger(opts)
	if err != nil {
		t.Fatal(err)
	}
	set := func(k string) error {
		return db.Update(func(txn index.Txn) error { return txn.Set([]byte(k), []byte(k)) })
	}
	del := func(k string) error {
		return db.UpdateFreeing(func(txn index.Txn) error { return txn.Delete([]byte(k)) })
	}
	for _, k := range []string{"before", "deleted under the reserve", "deleted under the floor"} {
		if err := set(k); err != nil {
			t.Fatal(err)
		}
	}
	if db.Reserve() != 4<<20 || db.Floor() != 2<<20 {
		t.Errorf("reserve %d and floor %d, want four 1 MiB memtables and two", db.Reserve(), db.Floor())
	}
	free.Store(db.Reserve() + 4<<10) // room for a write of a few bytes, not one of 8 KiB
	if err := db.Update(func(txn index.Txn) error { return txn.Set([]byte("big"), make([]byte, 8<<10)) }); !errors.Is(err, oci.ErrStorageFull) {
		t.Fatalf("a write that would take the free space under the reserve: %v, want the storage-full error", err)
	}
	free.Store(db.Reserve() - 1)
	if err := set("while full"); !errors.Is(err, oci.ErrStorageFull) {
		t.Fatalf("a write under the reserve: %v, want the storage-full error", err)
	}
	if err := del("deleted under the reserve"); err != nil {
		t.Errorf("a delete under the reserve: %v", err)
	}
	if err := db.Compact(); !errors.Is(err, oci.ErrStorageFull) {
		t.Errorf("a compaction (which holds a value-log file) under the reserve: %v", err)
	}
	if v, err := index.GetOne(db, []byte("before")); err != nil || string(v) != "before" {
		t.Errorf("a read under the reserve: %q %v", v, err)
	}
	if _, err := index.GetOne(db, []byte("while full")); !errors.Is(err, index.ErrNotFound) {
		t.Errorf("the refused write: %v, want nothing written", err)
	}
	free.Store(db.Floor() - 1)
	if err := del("deleted under the floor"); !errors.Is(err, oci.ErrStorageFull) {
		t.Errorf("a delete under the floor: %v, want the storage-full error", err)
	}
	free.Store(db.Reserve() + 1<<20)
	if err := set("with room"); err != nil {
		t.Errorf("a write with room again: %v", err)
	}
	// Opening writes too: on a full filesystem it is refused, not left to crash.
	db.Close()
	free.Store(db.Floor() - 1)
	if _, err := index.OpenBadger(opts); !errors.Is(err, oci.ErrStorageFull) {
		t.Fatalf("opening under the floor: %v, want the storage-full error", err)
	}
	free.Store(db.Floor())
	db, err = index.OpenBadger(opts)
	if err != nil {
		t.Fatalf("opening at the floor: %v", err)
	}
	db.Close()
}
