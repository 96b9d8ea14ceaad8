package index

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dockyard/dockyard/oci"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PostgresOptions configure the PostgreSQL index.
type PostgresOptions struct {
	DSN string
	// Password, when set, is used instead of one in the DSN.
	Password string
	MaxConns int32
	// Timeout bounds one transaction (default 30s): a database that does not answer
	// fails requests instead of piling them up.
	Timeout time.Duration
	// AcquireTimeout bounds the wait for a free connection (default 5s, at most
	// Timeout): a pool exhausted under load queues briefly, then fails clearly.
	AcquireTimeout time.Duration
}

// Postgres keeps the index in one table of a PostgreSQL database, in SERIALIZABLE
// transactions: PostgreSQL's own conflict detection (predicate locks on what a
// transaction read, ranges included) decides, and Update retries serialisation
// failures. Several dockyard instances share one database this way.
type Postgres struct {
	pool           *pgxpool.Pool
	timeout        time.Duration
	acquireTimeout time.Duration
	locks          *pgLocks
}

// schemaVersion is the version of the tables this dockyard creates and knows.
const schemaVersion = 1

// migrations[v] brings the schema from version v to v+1.
var migrations = []string{
	0: `CREATE TABLE IF NOT EXISTS dockyard_kv (k bytea PRIMARY KEY, v bytea NOT NULL)`,
}

// migrationLock is the advisory lock under which instances starting together apply
// the migrations one at a time.
const migrationLock = 0x646f636b79617264 // "dockyard"

// OpenPostgres connects and brings the schema up to date (under an advisory lock, so
// that instances starting at once are safe); a schema newer than this dockyard knows
// is refused.
func OpenPostgres(ctx context.Context, o PostgresOptions) (*Postgres, error) {
	cfg, err := pgxpool.ParseConfig(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("index: postgres dsn: %w", err)
	}
	if o.Password != "" {
		cfg.ConnConfig.Password = o.Password
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.AcquireTimeout <= 0 {
		o.AcquireTimeout = 5 * time.Second
	}
	cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
		tuneSession(conn)
		// A transaction whose instance died mid-way ends with the transaction timeout.
		conn.Exec(ctx, fmt.Sprintf("SET idle_in_transaction_session_timeout = %d", o.Timeout.Milliseconds()))
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("index: postgres: %w", err)
	}
	p := &Postgres{pool: pool, timeout: o.Timeout, acquireTimeout: min(o.AcquireTimeout, o.Timeout)}
	if err := p.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	p.locks = newPGLocks(cfg.ConnConfig.Copy(), o.Timeout)
	return p, nil
}

func (p *Postgres) migrate(ctx context.Context) error {
	conn, err := p.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("index: postgres: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
		return fmt.Errorf("index: postgres: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, int64(migrationLock))
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS dockyard_schema (version int NOT NULL)`); err != nil {
		return fmt.Errorf("index: postgres schema: %w", err)
	}
	var v int
	err = conn.QueryRow(ctx, `SELECT version FROM dockyard_schema`).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := conn.Exec(ctx, `INSERT INTO dockyard_schema VALUES (0)`); err != nil {
			return fmt.Errorf("index: postgres schema: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("index: postgres schema: %w", err)
	}
	if v > schemaVersion {
		return fmt.Errorf("index: the database's schema is version %d, newer than this dockyard knows (%d): upgrade dockyard", v, schemaVersion)
	}
	for ; v < schemaVersion; v++ {
		tx, err := conn.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			tx.Rollback(ctx)
			return fmt.Errorf("index: postgres schema %d→%d: %w", v, v+1, err)
		}
		if _, err := tx.Exec(ctx, `UPDATE dockyard_schema SET version = $1`, v+1); err != nil {
			tx.Rollback(ctx)
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Shared reports that other instances may share the database.
func (p *Postgres) Shared() bool { return true }

func (p *Postgres) Close() error {
	p.locks.close()
	p.pool.Close()
	return nil
}

// Lock takes a PostgreSQL advisory lock, shared by every instance on the database.
func (p *Postgres) Lock(ctx context.Context, key string) (context.Context, func(), error) {
	return p.locks.Lock(ctx, key)
}

func (p *Postgres) TryLock(ctx context.Context, key string) (context.Context, func(), bool, error) {
	return p.locks.TryLock(ctx, key)
}

func (p *Postgres) Holds(held ...context.Context) bool { return p.locks.Holds(held...) }

// Serve says that this process serves the index, until it closes.
func (p *Postgres) Serve() error { return p.locks.serve() }

// Alone takes the index for this process alone: ok is false while any instance
// serves it.
func (p *Postgres) Alone(ctx context.Context) (held context.Context, release func(), ok bool, err error) {
	return p.locks.TryLock(ctx, presenceKey)
}

// View reads one snapshot (REPEATABLE READ, read only), as Badger's View does: a
// read-only transaction never fails to serialise there, so fn runs exactly once —
// callers may collect what they read without resetting it. (A read-only SERIALIZABLE
// transaction can fail with 40001, and re-running fn would collect twice.)
func (p *Postgres) View(fn func(Txn) error) error {
	return p.once(pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, fn)
}

// Update retries serialisation failures and deadlocks: the transaction read something
// a concurrent one changed.
func (p *Postgres) Update(fn func(Txn) error) error { return p.TryUpdate(fn, false, Attempts) }

// TryUpdate is Update giving up after attempts serialisation failures (index.Trier);
// PostgreSQL keeps no reserve, so freeing changes nothing.
func (p *Postgres) TryUpdate(fn func(Txn) error, _ bool, attempts int) error {
	return retry(attempts, func() error { return p.once(pgx.TxOptions{IsoLevel: pgx.Serializable}, fn) },
		func(err error) bool {
			var pe *pgconn.PgError
			return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
		})
}

// acquire takes a connection from the pool, waiting at most acquireTimeout; ctx bounds
// its use (the transaction's timeout).
func (p *Postgres) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	actx, cancel := context.WithTimeout(ctx, p.acquireTimeout)
	defer cancel()
	conn, err := p.pool.Acquire(actx)
	if err != nil {
		return nil, unavailable("no connection", err)
	}
	return conn, nil
}

func (p *Postgres) once(opts pgx.TxOptions, fn func(Txn) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	conn, err := p.acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, opts)
	if err != nil {
		return classify("begin", err)
	}
	if err := fn(pgTxn{ctx: ctx, tx: tx}); err != nil {
		rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		tx.Rollback(rctx)
		rcancel()
		return err
	}
	return classify("commit", tx.Commit(ctx))
}

// classify marks failures to reach the database (a connection lost or refused, a
// timeout, PostgreSQL shutting down or out of connections) as ErrIndexUnavailable.
// SQL errors, serialisation failures among them, stay as they are.
func classify(op string, err error) error {
	if err == nil || errors.Is(err, oci.ErrIndexUnavailable) {
		return err
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "57", "53": // connection exception, operator intervention, insufficient resources
			return unavailable(op, err)
		}
		return err
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return unavailable(op+": the transaction ran past index.postgres.timeout", err)
	}
	return unavailable(op, err)
}

// GetOne reads one key in a statement of its own.
func (p *Postgres) GetOne(key []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), p.timeout)
	defer cancel()
	conn, err := p.acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	return pgGet(ctx, conn, key)
}

// pgGet reads key through q (a connection or a transaction).
func pgGet(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, key []byte) ([]byte, error) {
	var v []byte
	err := q.QueryRow(ctx, `SELECT v FROM dockyard_kv WHERE k = $1`, key).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNotFound
	}
	if v == nil && err == nil {
		v = []byte{}
	}
	return v, classify("get", err)
}

type pgTxn struct {
	ctx context.Context
	tx  pgx.Tx
}

func (t pgTxn) Get(key []byte) ([]byte, error) { return pgGet(t.ctx, t.tx, key) }

// GetMany reads keys in one statement.
func (t pgTxn) GetMany(keys [][]byte) ([][]byte, error) {
	out := make([][]byte, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	rows, err := t.tx.Query(t.ctx, `SELECT k, v FROM dockyard_kv WHERE k = ANY($1)`, keys)
	if err != nil {
		return nil, classify("get", err)
	}
	found := make(map[string][]byte, len(keys))
	for rows.Next() {
		var k, v []byte
		if err := rows.Scan(&k, &v); err != nil {
			rows.Close()
			return nil, classify("get", err)
		}
		if v == nil {
			v = []byte{}
		}
		found[string(k)] = v
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, classify("get", err)
	}
	for i, k := range keys {
		out[i] = found[string(k)]
	}
	return out, nil
}

func (t pgTxn) Set(key, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	_, err := t.tx.Exec(t.ctx, `INSERT INTO dockyard_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v`, key, value)
	return classify("set", err)
}

func (t pgTxn) Delete(key []byte) error {
	_, err := t.tx.Exec(t.ctx, `DELETE FROM dockyard_kv WHERE k = $1`, key)
	return classify("delete", err)
}

// Scan reads a page of rows at a time (fn may query the transaction, which a
// connection cannot do while rows are open): keys-only pages start at 1,024 rows (a
// listing page of 1,000 in one query) and grow to 8,192; pages with values hold 256
// rows and at most scanPageBytes of values (manifests can be megabytes).
const (
	scanKeysFirst = 1024
	scanKeysMax   = 8192
	scanValues    = 256
	scanPageBytes = 8 << 20
)

// Scan reads the range a page at a time, in key order (bytea compares as unsigned
// bytes, as Badger's keys do).
func (t pgTxn) Scan(prefix, start []byte, keysOnly bool, fn func(key, value []byte) error) error {
	from := prefix
	if start != nil && bytes.Compare(start, prefix) > 0 {
		from = start
	}
	if from == nil {
		from = []byte{} // not NULL: every key is at least the empty one
	}
	end := prefixEnd(prefix)
	inclusive := true
	limit := scanValues
	if keysOnly {
		limit = scanKeysFirst
	}
	for {
		col := "v"
		if keysOnly {
			col = "NULL::bytea"
		}
		op := ">"
		if inclusive {
			op = ">="
		}
		q := `SELECT k, ` + col + ` FROM dockyard_kv WHERE k ` + op + ` $1`
		args := []any{from}
		if end != nil {
			q += ` AND k < $2`
			args = append(args, end)
		}
		q += fmt.Sprintf(` ORDER BY k LIMIT %d`, limit)
		rows, err := t.tx.Query(t.ctx, q, args...)
		if err != nil {
			return classify("scan", err)
		}
		type kv struct{ k, v []byte }
		var page []kv
		full, size := false, 0
		for rows.Next() {
			var r kv
			if err := rows.Scan(&r.k, &r.v); err != nil {
				rows.Close()
				return classify("scan", err)
			}
			page = append(page, r)
			if size += len(r.v); size >= scanPageBytes {
				full = true // the rest of this page is read again from here
				break
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return classify("scan", err)
		}
		for _, r := range page {
			if err := fn(r.k, r.v); err != nil {
				return err
			}
		}
		if !full && len(page) < limit {
			return nil
		}
		from, inclusive = page[len(page)-1].k, false
		if keysOnly {
			limit = min(4*limit, scanKeysMax)
		}
	}
}

// prefixEnd is the first key after every key starting with prefix (nil: none).
func prefixEnd(prefix []byte) []byte {
	end := bytes.Clone(prefix)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}
