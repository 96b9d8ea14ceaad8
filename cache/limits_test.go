package cache

import (
	"context"
	"errors"
	"fmt"

	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// smallStore has a 1 MiB memtable: one transaction takes about 1,600 changes.
func smallStore(t *testing.T, now func() time.Time) *Store {
	t.Helper()
	s, err := Open(Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: now, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// linkEverywhere links blob d into n repositories of reg, a few hundred per transaction.
func linkEverywhere(t *testing.T, s *Store, reg string, d oci.Digest, size int64, n int) {
	t.Helper()
	for i := 0; i < n; i += 300 {
		err := s.update(func(txn index.Txn) error {
			for j := i; j < min(i+300, n); j++ {
				if err := s.linkBlob(txn, reg, fmt.Sprintf("repo/%05d", j), d, size); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A blob linked into more repositories than one transaction can unlink is still
// collected, together with a batch of ordinary garbage.
func TestGCCollectsABlobWithMoreLinksThanOneTransactionTakes(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	s := smallStore(t, c.Now)
	big := putBlob(t, s, "up", "repo/00000", []byte("a layer every repository of a proxy holds"))
	linkEverywhere(t, s, "up", big, 41, 3000)
	var small []oci.Digest
	for i := range 300 {
		small = append(small, putBlob(t, s, "up", "repo/00001", []byte(fmt.Sprint("garbage ", i))))
	}
	c.Add(2 * time.Hour)
	rep, err := s.CollectGarbage(context.Background(), GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatalf("collection: %v", err)
	}
	if rep.Blobs != 301 {
		t.Errorf("collected %d blobs, want 301", rep.Blobs)
	}
	for _, d := range append(small, big) {
		if b, _ := refs(t, s, d); b != -1 {
			t.Errorf("blob %s still has a record", d)
		}
	}
	clean(t, s)
}

// Many pull records are written in as many transactions as they need.
func TestFlushAccessWritesMoreRecordsThanOneTransactionTakes(t *testing.T) {
	s := smallStore(t, nil)
	m := image(t, s, "dev", "app", "pulled")
	d := putManifest(t, s, "dev", "app", m, false)
	var tags []oci.Tag
	for i := range 3000 {
		tags = append(tags, oci.Tag(fmt.Sprint("t", i)))
	}
	for i := 0; i < len(tags); i += 300 {
		putManifest(t, s, "dev", "app", m, false, tags[i:i+300]...)
	}
	for _, tag := range tags {
		s.RecordPull("dev", "app", string(tag), d)
	}
	if err := s.FlushAccess(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	mp, tp, err := s.PullInfo(context.Background(), "dev", "app", "t2999", d)
	if err != nil || mp.Pulls != 3000 || tp.Pulls != 1 {
		t.Errorf("pull records: manifest %+v tag %+v %v", mp, tp, err)
	}
}

// A flush that fails keeps its records: the next one writes them, with the pulls
// since.
func TestAFailedFlushLosesNoPulls(t *testing.T) {
	s := testStore(t, nil)
	d := putManifest(t, s, "dev", "app", image(t, s, "dev", "app", "pulled"), false, "1.0")
	ctx := context.Background()
	for range 2 {
		if _, err := s.GetManifest(ctx, "dev", "app", oci.Reference{Tag: "1.0"}); err != nil {
			t.Fatal(err)
		}
	}
	hookFlushAccess = func() error { return errors.New("disk trouble") }
	if err := s.FlushAccess(); err == nil {
		t.Fatal("the failing flush reported success")
	}
	hookFlushAccess = nil
	if _, err := s.GetManifest(ctx, "dev", "app", oci.Reference{Tag: "1.0"}); err != nil {
		t.Fatal(err)
	}
	if err := s.FlushAccess(); err != nil {
		t.Fatal(err)
	}
	m, tagged, err := s.PullInfo(ctx, "dev", "app", "1.0", d)
	if err != nil || m.Pulls != 3 || tagged.Pulls != 3 || tagged.PulledAt == 0 {
		t.Errorf("after a failed flush and a good one: manifest %+v, tag %+v, %v (want 3 pulls each)", m, tagged, err)
	}
}

// A flush writes at most flushBatch records per transaction, on any index: a
// PostgreSQL transaction (which never says "too big") stays short.
func TestFlushAccessWritesInBoundedTransactions(t *testing.T) {
	s := testStore(t, nil)
	m := image(t, s, "dev", "app", "pulled")
	d := putManifest(t, s, "dev", "app", m, false)
	var tags []oci.Tag
	for i := range 2500 {
		tags = append(tags, oci.Tag(fmt.Sprint("t", i)))
	}
	for i := 0; i < len(tags); i += 500 {
		putManifest(t, s, "dev", "app", m, false, tags[i:i+500]...)
	}
	for _, tag := range tags {
		s.RecordPull("dev", "app", string(tag), d)
	}
	txns := 0
	hookFlushAccess = func() error { txns++; return nil }
	defer func() { hookFlushAccess = nil }()
	if err := s.FlushAccess(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if want := (2501 + flushBatch - 1) / flushBatch; txns < want {
		t.Errorf("2501 records were written in %d transactions, want at least %d", txns, want)
	}
	if m, _, err := s.PullInfo(context.Background(), "dev", "app", "t2499", d); err != nil || m.Pulls != 2500 {
		t.Errorf("pull records: %+v %v", m, err)
	}
}
