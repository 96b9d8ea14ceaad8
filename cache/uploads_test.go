package cache

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/oci"
)

// crashAfterCommit leaves an upload as a crash between its commit into place and the
// index transaction does: the blob is stored, the session still open, nothing linked.
// extra is what the crashed request had appended before committing.
func crashAfterCommit(t *testing.T, s *Store, u *Upload, extra string, d oci.Digest) {
	t.Helper()
	w, err := s.blobs.ResumeWriter(context.Background(), u.ID, u.Offset)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, extra)
	if err := w.Commit(d); err != nil {
		t.Fatal(err)
	}
}

// A retried closing PUT after such a crash succeeds — without a body, and with the
// last chunk as its body — and links the blob; a client that does not send the
// content that hashes to the digest gets nothing linked.
func TestAClosingPutRetriedAfterACrashCompletes(t *testing.T) {
	for _, lastChunk := range []bool{false, true} {
		s := testStore(t, nil)
		ctx := context.Background()
		first, second := "the first part of a blob, ", "and its last chunk"
		d := oci.FromBytes(oci.SHA256, []byte(first+second))
		u, err := s.StartUpload(ctx, "dev", "app", oci.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		sent := first
		if !lastChunk {
			sent = first + second
		}
		if u, err = s.AppendUpload(ctx, "dev", "app", u.ID, 0, strings.NewReader(sent), int64(len(sent))); err != nil {
			t.Fatal(err)
		}
		extra := "" // what the crashed PUT had appended before the commit
		if lastChunk {
			extra = second
		}
		crashAfterCommit(t, s, u, extra, d)
		if lastChunk {
			wrong := "not what the digest is of"
			if _, err := s.FinishUpload(ctx, "dev", "app", u.ID, d, u.Offset, strings.NewReader(wrong), int64(len(wrong))); err == nil {
				t.Error("a retry with other bytes than the digest's was accepted")
			}
			if _, err := s.StatBlob(ctx, "dev", "app", d); err == nil {
				t.Error("the blob was linked for a client that did not send it")
			}
		}
		var body io.Reader
		var n int64 = -1
		if lastChunk {
			body, n = strings.NewReader(second), int64(len(second))
		}
		size, err := s.FinishUpload(ctx, "dev", "app", u.ID, d, u.Offset, body, n)
		if err != nil || size != int64(len(first+second)) {
			t.Errorf("lastChunk=%v: the retried PUT: %d %v", lastChunk, size, err)
		}
		if _, err := s.StatBlob(ctx, "dev", "app", d); err != nil {
			t.Errorf("lastChunk=%v: the blob is not linked: %v", lastChunk, err)
		}
		if _, err := s.GetUpload(ctx, "dev", "app", u.ID); err == nil {
			t.Errorf("lastChunk=%v: the session is still open", lastChunk)
		}
		clean(t, s)
	}
}

// Sessions are aged by their last chunk, not their start; one receiving a chunk while
// the purge runs survives it.
func TestPurgeAgesUploadsByTheirLastChunk(t *testing.T) {
	c := &clock{now: time.Unix(1e9, 0)}
	s := testStore(t, c.Now)
	ctx := context.Background()
	active, _ := s.StartUpload(ctx, "dev", "app", oci.SHA256)
	idle, _ := s.StartUpload(ctx, "dev", "app", oci.SHA256)
	inflight, _ := s.StartUpload(ctx, "dev", "app", oci.SHA256)
	c.Add(23 * time.Hour)
	if _, err := s.AppendUpload(ctx, "dev", "app", active.ID, 0, strings.NewReader("chunk"), 5); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Hour) // 25 h after the start, 2 h after active's last chunk
	// A chunk of inflight is being received while the purge runs: the purge finds the
	// session stale, and the chunk ends before the purge takes the session's lock.
	pr, pw := io.Pipe()
	appended := make(chan error, 1)
	go func() {
		_, err := s.AppendUpload(ctx, "dev", "app", inflight.ID, 0, pr, -1)
		appended <- err
	}()
	io.WriteString(pw, "the chunk has begun")
	s.beforePurgeLock = func(id string) {
		if id == inflight.ID {
			pw.Close()
			if err := <-appended; err != nil {
				t.Error(err)
			}
		}
	}
	n, err := s.PurgeUploads(ctx, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("purged %d, want 1 (the idle session)", n)
	}
	for _, c := range []struct {
		u    *Upload
		open bool
	}{{active, true}, {inflight, true}, {idle, false}} {
		if _, err := s.GetUpload(ctx, "dev", "app", c.u.ID); (err == nil) != c.open {
			t.Errorf("session %s open: %v, want %v", c.u.ID, err == nil, c.open)
		}
	}
	s.blobs.WalkUploads(ctx, func(u blobstore.Upload) error {
		if u.ID == idle.ID {
			t.Errorf("the purged session's data is still stored")
		}
		return nil
	})
}

// A request on an upload another request is writing (a client retrying while its
// first attempt still runs, or many requests parked on one session) is answered
// "busy, try again" at once instead of waiting for the lock; the upload then goes on.
func TestABusyUploadIsAnsweredAtOnce(t *testing.T) {
	s := testStore(t, nil)
	ctx := context.Background()
	u, err := s.StartUpload(ctx, "dev", "app", oci.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	_, unlock, err := s.Lock(ctx, uploadLock(u.ID)) // another request writing it
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.AppendUpload(ctx, "dev", "app", u.ID, 0, strings.NewReader("chunk"), 5)
	if e, ok := oci.AsError(err); !ok || e.Code != oci.ErrTooManyRequests || e.RetryAfter == "" {
		t.Errorf("a chunk for a busy upload: %v, want TOOMANYREQUESTS with Retry-After", err)
	}
	if err := s.CancelUpload(ctx, "dev", "app", u.ID); !errors.Is(err, oci.ErrTooManyRequests) {
		t.Errorf("cancelling a busy upload: %v", err)
	}
	unlock()
	if _, err := s.AppendUpload(ctx, "dev", "app", u.ID, 0, strings.NewReader("chunk"), 5); err != nil {
		t.Errorf("the chunk once the upload is free: %v", err)
	}
}
