package index

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/dockyard/dockyard/oci"
	"github.com/jackc/pgx/v5"
)

// pgLocks are PostgreSQL session advisory locks, all on one connection of their own:
// pg_try_advisory_lock asks without blocking the connection, and a caller polls until
// it gets its lock. A lock is first taken in this process (advisory locks are
// re-entrant within a session, so two callers here must not both ask PostgreSQL). When
// the connection dies PostgreSQL releases its locks: every holder's held context is
// cancelled then (a keepalive finds out within lockPing).
type pgLocks struct {
	local   LocalLocker
	config  *pgx.ConnConfig
	timeout time.Duration

	sem  chan struct{} // one caller at a time on conn
	conn *pgx.Conn
	// lost is cancelled when conn dies, and with it the held contexts of its locks.
	lost     context.Context
	loseAll  context.CancelFunc
	held     int
	downTill time.Time // after a failed connect, callers fail at once until then
	// serving: this process serves, and says so with a shared lock on presenceKey,
	// taken again on every new connection; present: it holds it now.
	serving, present bool
	stop             chan struct{}
	closeOnce        sync.Once
	done             chan struct{}
}

const (
	lockPing      = 2 * time.Second
	lockPollFirst = 2 * time.Millisecond
	lockPollMax   = 100 * time.Millisecond
	lockDownFor   = time.Second
)

func newPGLocks(config *pgx.ConnConfig, timeout time.Duration) *pgLocks {
	l := &pgLocks{config: config, timeout: min(timeout, 5*time.Second), sem: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go l.keepalive()
	return l
}

// lockID names key among PostgreSQL's 64-bit advisory locks (a collision only makes
// two keys wait for each other).
func lockID(key string) int64 {
	h := fnv.New64a()
	h.Write([]byte("dockyard:" + key))
	return int64(h.Sum64())
}

func (l *pgLocks) Lock(ctx context.Context, key string) (context.Context, func(), error) {
	_, unlockLocal, err := l.local.Lock(ctx, key)
	if err != nil {
		return nil, nil, err
	}
	id := lockID(key)
	delay := lockPollFirst
	for {
		lost, ok, err := l.try(ctx, id)
		if err != nil {
			unlockLocal()
			return nil, nil, err
		}
		if ok {
			held, cancel := context.WithCancel(lost)
			return held, l.release(id, lost, cancel, unlockLocal), nil
		}
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			unlockLocal()
			return nil, nil, ctx.Err()
		}
		delay = min(2*delay, lockPollMax)
	}
}

func (l *pgLocks) TryLock(ctx context.Context, key string) (context.Context, func(), bool, error) {
	_, unlockLocal, ok, _ := l.local.TryLock(ctx, key)
	if !ok {
		return nil, nil, false, nil
	}
	id := lockID(key)
	lost, ok, err := l.try(ctx, id)
	if err != nil || !ok {
		unlockLocal()
		return nil, nil, false, err
	}
	held, cancel := context.WithCancel(lost)
	return held, l.release(id, lost, cancel, unlockLocal), true, nil
}

// Holds pings the lock connection (a dead one is dropped, cancelling every held
// context of its locks), then reports whether all of held are still held.
func (l *pgLocks) Holds(held ...context.Context) bool {
	if !allHeld(held) {
		return false
	}
	l.sem <- struct{}{}
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
		if err := l.conn.Ping(ctx); err != nil {
			l.drop()
		}
		cancel()
	}
	<-l.sem
	return allHeld(held)
}

// acquire takes the connection's turn, giving up when ctx ends.
func (l *pgLocks) acquire(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// try asks PostgreSQL for lock id once. Its queries do not take the caller's context:
// a request given up mid-query would close the connection and drop every lock on it.
func (l *pgLocks) try(ctx context.Context, id int64) (lost context.Context, ok bool, err error) {
	if err := l.acquire(ctx); err != nil {
		return nil, false, err
	}
	defer func() { <-l.sem }()
	if l.conn == nil {
		if time.Now().Before(l.downTill) {
			return nil, false, unavailable("locks", errors.New("the lock connection failed moments ago"))
		}
		if err := l.connect(); err != nil {
			return nil, false, err
		}
	}
	qctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	if err := l.conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1)`, id).Scan(&ok); err != nil {
		l.drop()
		return nil, false, unavailable("locks", err)
	}
	if ok {
		l.held++
	}
	return l.lost, ok, nil
}

func (l *pgLocks) release(id int64, lost context.Context, cancel context.CancelFunc, unlockLocal func()) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			cancel()
			defer unlockLocal()
			l.sem <- struct{}{}
			defer func() { <-l.sem }()
			if lost.Err() != nil || l.conn == nil {
				return // the connection died, and the lock with it
			}
			l.held--
			ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
			defer cancel()
			if _, err := l.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, id); err != nil {
				l.drop()
			}
		})
	}
}

// connect opens the lock connection (its settings made, this process's presence
// announced); after a failure, callers fail at once for lockDownFor. The caller has the
// connection's turn.
func (l *pgLocks) connect() error {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, l.config)
	if err != nil {
		l.downTill = time.Now().Add(lockDownFor)
		return unavailable("locks", err)
	}
	l.conn = conn
	l.lost, l.loseAll = context.WithCancel(context.Background())
	tuneSession(conn)
	l.announce()
	return nil
}

// drop closes a failed connection: PostgreSQL releases its locks, so their holders
// are told. The caller has the connection's turn.
func (l *pgLocks) drop() {
	if l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	l.conn.Close(ctx)
	cancel()
	l.conn = nil
	l.loseAll()
	l.held = 0
	l.present = false
}

// presenceKey is the lock every serving instance holds shared; an offline command
// that must run alone takes it exclusively (TryLock).
const presenceKey = "serving"

// announce takes the shared presence lock when this process serves and does not hold
// it yet. The caller has the connection's turn, with a connection.
func (l *pgLocks) announce() {
	if !l.serving || l.present || l.conn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	var ok bool
	if err := l.conn.QueryRow(ctx, `SELECT pg_try_advisory_lock_shared($1)`, lockID(presenceKey)).Scan(&ok); err != nil {
		l.drop()
		return
	}
	l.present = ok // when an offline command runs alone, the keepalive tries again
}

// serve marks this process as serving (see presenceKey) and announces it now.
func (l *pgLocks) serve() error {
	l.sem <- struct{}{}
	defer func() { <-l.sem }()
	l.serving = true
	if l.conn == nil {
		if err := l.connect(); err != nil {
			return err
		}
	}
	l.announce()
	if !l.present {
		return errors.New("index: an offline command (fsck --repair, index copy) holds this index alone; start the instance after it ends")
	}
	return nil
}

// keepalive pings the connection while it holds locks, so that a connection PostgreSQL
// lost (a restart, a network cut) is noticed even when no one asks for a lock.
func (l *pgLocks) keepalive() {
	defer close(l.done)
	t := time.NewTicker(lockPing)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			l.sem <- struct{}{}
			l.drop()
			<-l.sem
			return
		case <-t.C:
		}
		l.sem <- struct{}{}
		if l.conn != nil && (l.held > 0 || l.serving) {
			ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
			if err := l.conn.Ping(ctx); err != nil {
				l.drop()
			}
			cancel()
		}
		if l.conn == nil && l.serving && time.Now().After(l.downTill) {
			l.connect() // serving, without a connection (PostgreSQL restarted): announce again
		}
		l.announce()
		<-l.sem
	}
}

func (l *pgLocks) close() {
	l.closeOnce.Do(func() { close(l.stop) })
	<-l.done
}

// sessionSettings make PostgreSQL notice a dead dockyard within seconds (a host
// crashed, a network cut: no FIN ever arrives) instead of after the kernel's two
// hours, and end a transaction its client left open: a dead instance's advisory locks
// and row locks are released in bounded time. Servers that do not know a setting
// (tcp_user_timeout before PostgreSQL 12) skip it.
var sessionSettings = []string{
	"SET tcp_keepalives_idle = 5",
	"SET tcp_keepalives_interval = 2",
	"SET tcp_keepalives_count = 3",
	"SET tcp_user_timeout = 10000",
}

func tuneSession(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, q := range sessionSettings {
		conn.Exec(ctx, q)
	}
}

// unavailable marks a failure to reach the database: the client hears 503 and may try
// again.
func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %w", oci.ErrIndexUnavailable.Withf("the index database could not be reached (%s); try again", op), err)
}
