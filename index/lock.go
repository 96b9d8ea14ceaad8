package index

import (
	"context"
	"sync"
)

// Locker hands out named locks held across every process that shares the index: the
// work an index transaction cannot cover — writing a blob's bytes and recording them,
// one upload's chunks, one scheduled job — is serialised with them.
type Locker interface {
	// Lock waits until key is the caller's or ctx ends. held is cancelled when the
	// lock is released, or lost (the connection that held it died): work that must
	// stay under the lock checks it before each step with an outside effect.
	Lock(ctx context.Context, key string) (held context.Context, unlock func(), err error)
	// TryLock takes key if no one holds it; ok is false when someone does.
	TryLock(ctx context.Context, key string) (held context.Context, unlock func(), ok bool, err error)
	// Holds confirms, now, that the locks whose held contexts are given are still held
	// (for PostgreSQL: their connection answers), cancelling them when not. Work with
	// an outside effect that must stay under a lock asks right before the effect: the
	// held context alone learns of a loss only within a keepalive period.
	Holds(held ...context.Context) bool
}

// Presence is implemented by indexes several processes share: a serving instance says
// so, and an offline command that must not run beside one (fsck --repair) checks.
type Presence interface {
	// Serve says this process serves the index, until it closes it.
	Serve() error
	// Alone takes the index for the caller alone until release; ok is false while an
	// instance serves it. held is cancelled if that is lost (see Locker).
	Alone(ctx context.Context) (held context.Context, release func(), ok bool, err error)
}

// LockerOf is db's locker: its own when the driver has one (PostgreSQL's advisory
// locks), otherwise locks in this process, which suffice for an index no other
// process opens.
func LockerOf(db DB) Locker {
	if l, ok := db.(Locker); ok {
		return l
	}
	return &LocalLocker{}
}

// LocalLocker is a Locker whose locks are held in this process only.
type LocalLocker struct {
	mu    sync.Mutex
	locks map[string]*localLock
}

type localLock struct {
	ch    chan struct{} // holds a token while the lock is held
	users int
}

func (l *LocalLocker) Lock(ctx context.Context, key string) (context.Context, func(), error) {
	ll := l.join(key)
	select {
	case ll.ch <- struct{}{}:
		held, cancel := context.WithCancel(context.Background())
		return held, l.release(key, ll, cancel), nil
	case <-ctx.Done():
		l.leave(key, ll)
		return nil, nil, ctx.Err()
	}
}

func (l *LocalLocker) TryLock(ctx context.Context, key string) (context.Context, func(), bool, error) {
	ll := l.join(key)
	select {
	case ll.ch <- struct{}{}:
		held, cancel := context.WithCancel(context.Background())
		return held, l.release(key, ll, cancel), true, nil
	default:
		l.leave(key, ll)
		return nil, nil, false, nil
	}
}

func (l *LocalLocker) Holds(held ...context.Context) bool { return allHeld(held) }

func allHeld(held []context.Context) bool {
	for _, h := range held {
		if h == nil || h.Err() != nil {
			return false
		}
	}
	return true
}

func (l *LocalLocker) join(key string) *localLock {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locks == nil {
		l.locks = map[string]*localLock{}
	}
	ll := l.locks[key]
	if ll == nil {
		ll = &localLock{ch: make(chan struct{}, 1)}
		l.locks[key] = ll
	}
	ll.users++
	return ll
}

func (l *LocalLocker) leave(key string, ll *localLock) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ll.users--; ll.users == 0 {
		delete(l.locks, key)
	}
}

func (l *LocalLocker) release(key string, ll *localLock, cancel context.CancelFunc) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			<-ll.ch
			l.leave(key, ll)
		})
	}
}
