package index_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/index/pgtest"
	"github.com/dockyard/dockyard/oci"
	"github.com/jackc/pgx/v5"
)

// twoInstances runs a case with two lockers that stand for two instances: for Badger
// (one process) the same one twice, for PostgreSQL two connections to one database.
func twoInstances(t *testing.T, fn func(t *testing.T, a, b index.Locker)) {
	t.Run("badger", func(t *testing.T) {
		db, err := index.OpenBadger(index.BadgerOptions{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		l := index.LockerOf(db)
		fn(t, l, l)
	})
	t.Run("postgres", func(t *testing.T) {
		dsn := pgtest.Need(t, pg).NewDatabase(t)
		a, b := openPG(t, dsn), openPG(t, dsn)
		fn(t, index.LockerOf(a), index.LockerOf(b))
	})
}

func openPG(t *testing.T, dsn string) *index.Postgres {
	t.Helper()
	db, err := index.OpenPostgres(context.Background(), index.PostgresOptions{DSN: dsn, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestALockIsHeldByOneInstanceAtATime(t *testing.T) {
	twoInstances(t, func(t *testing.T, a, b index.Locker) {
		ctx := context.Background()
		heldA, unlockA, err := a.Lock(ctx, "blob/x")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, ok, err := b.TryLock(ctx, "blob/x"); ok || err != nil {
			t.Fatalf("TryLock of a held lock: ok=%v err=%v", ok, err)
		}
		short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, _, err = b.Lock(short, "blob/x")
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock of a held lock returned %v, want the caller's deadline", err)
		}
		// Another key is free meanwhile.
		_, unlockY, ok, err := b.TryLock(ctx, "blob/y")
		if !ok || err != nil {
			t.Fatalf("TryLock of a free key: ok=%v err=%v", ok, err)
		}
		unlockY()
		if heldA.Err() != nil {
			t.Fatal("a held lock's context is cancelled")
		}
		got := make(chan error)
		go func() {
			_, unlockB, err := b.Lock(ctx, "blob/x")
			if err == nil {
				unlockB()
			}
			got <- err
		}()
		select {
		case err := <-got:
			t.Fatalf("Lock returned (%v) while the other instance holds the lock", err)
		case <-time.After(200 * time.Millisecond):
		}
		unlockA()
		if heldA.Err() == nil {
			t.Error("the held context outlives its unlock")
		}
		if err := <-got; err != nil {
			t.Fatalf("Lock after the release: %v", err)
		}
		unlockA() // twice is harmless
	})
}

func TestLocksExcludeUnderContention(t *testing.T) {
	twoInstances(t, func(t *testing.T, a, b index.Locker) {
		var inside, most, done atomic.Int32
		var wg sync.WaitGroup
		for i := range 8 {
			l := a
			if i%2 == 1 {
				l = b
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 10 {
					_, unlock, err := l.Lock(context.Background(), "upload/u1")
					if err != nil {
						t.Error(err)
						return
					}
					n := inside.Add(1)
					if n > most.Load() {
						most.Store(n)
					}
					time.Sleep(time.Millisecond)
					inside.Add(-1)
					done.Add(1)
					unlock()
				}
			}()
		}
		wg.Wait()
		if most.Load() != 1 || done.Load() != 80 {
			t.Errorf("%d holders at once (want 1), %d of 80 turns done", most.Load(), done.Load())
		}
	})
}

// A lock whose connection PostgreSQL drops is lost: its holder is told (the held
// context is cancelled) and another instance can take it.
func TestALockGoesWithItsConnection(t *testing.T) {
	dsn := pgtest.Need(t, pg).NewDatabase(t)
	a, b := openPG(t, dsn), openPG(t, dsn)
	held, unlock, err := a.Lock(context.Background(), "blob/x")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	admin, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var killed int
	err = admin.QueryRow(context.Background(),
		`SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' AND granted`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminating the lock's connection: %d terminated, %v", killed, err)
	}
	// Once the backend is gone, Holds says so at once (not a keepalive later).
	for gone := false; !gone; {
		var n int
		admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'`).Scan(&n)
		gone = n == 0
	}
	if a.Holds(held) {
		t.Error("Holds says a lock whose connection is gone is held")
	}
	select {
	case <-held.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("the holder of a lock PostgreSQL released was not told")
	}
	unlock() // the holder gives up its work
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, unlockB, err := b.Lock(ctx, "blob/x")
	if err != nil {
		t.Fatalf("the other instance cannot take the lost lock: %v", err)
	}
	unlockB()
	// The first instance reconnects for its next lock.
	_, unlock2, err := a.Lock(ctx, "blob/x")
	if err != nil {
		t.Fatalf("no lock after the connection came back: %v", err)
	}
	unlock2()
}

// With PostgreSQL down, transactions and locks fail as "index unavailable" (a 503 for
// the client) instead of hanging, and work again once it is back, without reopening.
func TestADatabaseDownIsUnavailableThenRecovers(t *testing.T) {
	srv := pgtest.Need(t, pg)
	db := openPG(t, srv.NewDatabase(t))
	if err := db.Update(func(txn index.Txn) error { return txn.Set([]byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			srv.Resume()
		}
	}()
	err := db.View(func(txn index.Txn) error { _, err := txn.Get([]byte("k")); return err })
	if !errors.Is(err, oci.ErrIndexUnavailable) {
		t.Errorf("a read with the database down: %v, want index unavailable", err)
	}
	err = db.Update(func(txn index.Txn) error { return txn.Set([]byte("k"), []byte("w")) })
	if !errors.Is(err, oci.ErrIndexUnavailable) {
		t.Errorf("a write with the database down: %v, want index unavailable", err)
	}
	if _, _, err := db.Lock(context.Background(), "blob/x"); !errors.Is(err, oci.ErrIndexUnavailable) {
		t.Errorf("a lock with the database down: %v, want index unavailable", err)
	}
	if e, ok := oci.AsError(err); !ok || e.Code.Status != 503 {
		t.Errorf("the client would hear %v", err)
	}
	if err := srv.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	var v []byte
	deadline := time.Now().Add(20 * time.Second)
	for {
		err = db.View(func(txn index.Txn) error { v, err = txn.Get([]byte("k")); return err })
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil || string(v) != "v" {
		t.Fatalf("after the database came back: %q %v", v, err)
	}
	for {
		_, unlock, err := db.Lock(context.Background(), "blob/x")
		if err == nil {
			unlock()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lock after the database came back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A pool with every connection taken queues a transaction briefly, then fails it as
// "index unavailable" instead of letting requests pile up.
func TestAnExhaustedPoolFailsClearly(t *testing.T) {
	dsn := pgtest.Need(t, pg).NewDatabase(t)
	db, err := index.OpenPostgres(context.Background(), index.PostgresOptions{DSN: dsn, MaxConns: 1,
		Timeout: 5 * time.Second, AcquireTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	holding, release, released := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		db.View(func(index.Txn) error { close(holding); <-release; return nil })
		close(released)
	}()
	<-holding
	err = db.View(func(index.Txn) error { return nil })
	close(release)
	<-released
	if !errors.Is(err, oci.ErrIndexUnavailable) {
		t.Fatalf("a transaction with no free connection: %v, want index unavailable", err)
	}
	if err := db.View(func(index.Txn) error { return nil }); err != nil {
		t.Errorf("once the connection is free again: %v", err)
	}
}

// A View runs its function once, even while writers change what it reads: callers
// collect what they read into slices and maps without resetting them, so a re-run
// would count everything twice.
func TestAViewRunsItsFunctionOnce(t *testing.T) {
	each(t, func(t *testing.T, db index.DB) {
		k := func(p string, i int) []byte { return fmt.Appendf(nil, "probe/%s/%03d", p, i) }
		db.Update(func(txn index.Txn) error {
			for i := range 50 {
				txn.Set(k("a", i), []byte("0"))
				txn.Set(k("b", i), []byte("0"))
			}
			return nil
		})
		var views, reruns, failures atomic.Int64
		stop := time.Now().Add(4 * time.Second)
		var wg sync.WaitGroup
		for w := range 10 {
			wg.Add(2)
			go func() { // writers of a write-skew shape: read two keys, write one
				defer wg.Done()
				for n := 0; time.Now().Before(stop); n++ {
					i, j := (n*7+w)%50, (n*13+w*3)%50
					db.Update(func(txn index.Txn) error {
						txn.Get(k("a", i))
						txn.Get(k("b", j))
						if n%2 == 0 {
							return txn.Set(k("a", i), fmt.Append(nil, n))
						}
						return txn.Set(k("b", j), fmt.Append(nil, n))
					})
				}
			}()
			go func() { // readers scanning one range and reading the other
				defer wg.Done()
				for time.Now().Before(stop) {
					calls := 0
					err := db.View(func(txn index.Txn) error {
						calls++
						if err := txn.Scan([]byte("probe/a/"), nil, false, func(_, _ []byte) error { return nil }); err != nil {
							return err
						}
						for i := 0; i < 50; i += 7 {
							if _, err := txn.Get(k("b", i)); err != nil {
								return err
							}
						}
						return nil
					})
					views.Add(1)
					if err != nil {
						failures.Add(1)
					}
					if calls > 1 {
						reruns.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		if reruns.Load() != 0 || failures.Load() != 0 || views.Load() == 0 {
			t.Errorf("of %d views, %d ran their function again and %d failed", views.Load(), reruns.Load(), failures.Load())
		}
	})
}

// While an offline command holds the index alone, an instance does not start serving
// it; once it is released, it does.
func TestServingWaitsForAnIndexHeldAlone(t *testing.T) {
	dsn := pgtest.Need(t, pg).NewDatabase(t)
	offline, inst := openPG(t, dsn), openPG(t, dsn)
	_, release, alone, err := offline.Alone(context.Background())
	if err != nil || !alone {
		t.Fatalf("Alone on an index no one serves: %v %v", alone, err)
	}
	if err := inst.Serve(); err == nil {
		t.Error("an instance started serving an index an offline command holds alone")
	}
	release()
	if err := inst.Serve(); err != nil {
		t.Fatalf("serving after the offline command: %v", err)
	}
	if _, _, alone, err := offline.Alone(context.Background()); alone || err != nil {
		t.Errorf("Alone beside a serving instance: %v %v", alone, err)
	}
}
