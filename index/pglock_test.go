package index

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"
)

// A session of dockyard's tells PostgreSQL to notice a dead client within seconds.
func TestSessionsDetectDeadClientsQuickly(t *testing.T) {
	dsn := os.Getenv("DOCKYARD_TEST_PG_DSN")
	if dsn == "" {
		t.Skip("PostgreSQL is not installed; PostgreSQL cases skipped (make test runs them)")
	}
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tuneSession(conn)
	var idle, user string
	conn.QueryRow(context.Background(), "SHOW tcp_keepalives_idle").Scan(&idle)
	conn.QueryRow(context.Background(), "SHOW tcp_user_timeout").Scan(&user)
	if idle != "5" || user != "10000" {
		t.Errorf("tcp_keepalives_idle %q, tcp_user_timeout %q", idle, user)
	}
}
