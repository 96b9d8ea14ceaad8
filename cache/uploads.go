package cache

import (
	"context"
	"crypto/rand"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync/atomic"
	"time"

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/index"
	"github.com/dockyard/dockyard/oci"
)

// Upload is a blob upload session. Its record is saved after every chunk, with the
// hash state, so an upload continues where it stopped after a restart.
type Upload struct {
	ID        string
	Registry  string
	Repo      string
	Algorithm oci.Algorithm
	Offset    int64
	HashState []byte
	StartedAt time.Time
	// UpdatedAt is when a chunk last arrived (zero in sessions written before it was
	// recorded: their start time stands in). Abandoned uploads are aged by it.
	UpdatedAt time.Time `json:",omitempty"`
	// Client is who opened the session (see WithClient), for the per-client limit.
	Client string `json:",omitempty"`
}

// lastActivity is when the session was last used.
func (u *Upload) lastActivity() time.Time {
	if u.UpdatedAt.After(u.StartedAt) {
		return u.UpdatedAt
	}
	return u.StartedAt
}

func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// hash returns the upload's hash, restored to cover its first Offset bytes.
func (u *Upload) hash() (hash.Hash, error) {
	h := u.Algorithm.New()
	if len(u.HashState) > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(u.HashState); err != nil {
			return nil, fmt.Errorf("restore hash state of upload %s: %w", u.ID, err)
		}
	}
	return h, nil
}

// StartUpload opens an upload session into reg/repo hashing with alg, for the
// client ctx names (WithClient), within its limit of open sessions and while the
// storage has room.
func (s *Store) StartUpload(ctx context.Context, reg, repo string, alg oci.Algorithm) (*Upload, error) {
	if err := s.checkSpace(); err != nil {
		return nil, err
	}
	u := &Upload{ID: newID(), Registry: reg, Repo: repo, Algorithm: alg, StartedAt: s.now().UTC(), Client: clientOf(ctx)}
	shared := s.Shared()
	if !shared {
		if err := s.sessions.acquire(u.Client); err != nil {
			return nil, err
		}
	}
	err := func() error {
		w, err := s.blobs.NewWriter(ctx, u.ID)
		if err != nil {
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
		return s.update(func(txn index.Txn) error {
			if shared && u.Client != "" && s.sessions.max > 0 {
				// Instances sharing the index count a client's sessions there: one
				// may open a session another finishes.
				if err := s.sessions.check(txn, u.Client); err != nil {
					return err
				}
			}
			keys := sessionKeys(u)
			for _, k := range keys[1:] {
				if err := txn.Set(k, nil); err != nil {
					return err
				}
			}
			return setJSON(txn, keys[0], u)
		})
	}()
	if err != nil {
		s.releaseSession(u)
		s.blobs.RemoveUpload(context.WithoutCancel(ctx), u.ID)
		return nil, err
	}
	return u, nil
}

// releaseSession gives back the count of session u (memory: one instance; on a shared
// index its key went with its record).
func (s *Store) releaseSession(u *Upload) {
	if !s.Shared() {
		s.sessions.release(u.Client)
	}
}

// countSessions counts the open sessions of each client (at open; on a shared index
// they are counted in it).
func (s *Store) countSessions() error {
	if s.Shared() {
		return nil
	}
	return s.db.View(func(txn index.Txn) error {
		return scan(txn, []byte{kindUpload}, func(_, v []byte) error {
			var u Upload
			if err := decodeJSON(v, &u); err != nil {
				return err
			}
			if u.Client != "" {
				s.sessions.open[u.Client]++
			}
			return nil
		})
	})
}

// GetUpload returns the session id of reg/repo.
func (s *Store) GetUpload(ctx context.Context, reg, repo, id string) (*Upload, error) {
	var u Upload
	err := s.db.View(func(txn index.Txn) error {
		ok, err := getJSON(txn, uploadKey(id), &u)
		if err == nil && (!ok || u.Registry != reg || u.Repo != repo) {
			err = oci.ErrBlobUploadUnknown.Withf("upload %q is unknown to %s", id, repo)
		}
		return err
	})
	return &u, err
}

// AppendUpload writes a chunk to upload id. start is where the client says the chunk
// begins (-1 when it does not say); length is the chunk's size when known (-1
// otherwise). A failed chunk leaves the upload as it was before.
func (s *Store) AppendUpload(ctx context.Context, reg, repo, id string, start int64, r io.Reader, length int64) (*Upload, error) {
	held, unlock, err := s.lockUpload(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	u, err := s.GetUpload(ctx, reg, repo, id)
	if err != nil {
		return nil, err
	}
	if start >= 0 && start != u.Offset {
		return nil, oci.ErrRangeInvalid.Withf("chunk starts at %d, the upload has %d bytes", start, u.Offset)
	}
	if err := s.checkSpace(); err != nil {
		return nil, err
	}
	from := u.Offset
	w, h, err := s.appendChunk(ctx, u, r, length)
	if err != nil {
		return nil, err
	}
	if !s.Holds(held) {
		// Another instance may be writing this upload now: keep nothing of the chunk.
		w.Close()
		return nil, oci.ErrIndexUnavailable.Withf("the lock of upload %s was lost; send the chunk again", id)
	}
	err = w.Flush()
	w.Close()
	if err != nil {
		return nil, err
	}
	if err := u.saveHash(h); err != nil {
		return nil, err
	}
	u.UpdatedAt = s.now().UTC()
	err = s.update(func(txn index.Txn) error {
		// Only over the record the chunk was written after: a session finished,
		// cancelled or purged meanwhile is not brought back.
		var now Upload
		ok, err := getJSON(txn, uploadKey(id), &now)
		if err != nil {
			return err
		}
		if !ok || now.Offset != from {
			return oci.ErrBlobUploadUnknown.Withf("upload %s changed while this chunk was written; start the upload again", id)
		}
		return setJSON(txn, uploadKey(id), u)
	})
	if errors.Is(err, oci.ErrStorageFull) && s.Holds(held) {
		// The index had no room to record the chunk (and wrote nothing): its bytes go
		// now, not when the upload resumes, for they hold the space that is short.
		if w, rerr := s.blobs.ResumeWriter(context.WithoutCancel(ctx), id, from); rerr == nil {
			w.Close()
		}
	}
	return u, err
}

func (u *Upload) saveHash(h hash.Hash) (err error) {
	u.HashState, err = h.(encoding.BinaryMarshaler).MarshalBinary()
	return err
}

// appendChunk resumes the upload's writer where its record stands and streams r
// (nil: nothing) onto it while hashing, advancing u.Offset. It returns the open
// writer, not yet flushed: the caller flushes it (another chunk) or commits it (the
// last). On failure the writer is closed, and what it took is dropped when the
// upload resumes at the recorded offset.
func (s *Store) appendChunk(ctx context.Context, u *Upload, r io.Reader, length int64) (blobstore.Writer, hash.Hash, error) {
	h, err := u.hash()
	if err != nil {
		return nil, nil, err
	}
	w, err := s.blobs.ResumeWriter(ctx, u.ID, u.Offset)
	if errors.Is(err, blobstore.ErrNotExist) {
		return nil, nil, errUploadFileGone
	}
	if err != nil {
		return nil, nil, err
	}
	if r == nil {
		return w, h, nil
	}
	if err := s.writeChunk(w, u, h, r, length); err != nil {
		w.Close()
		return nil, nil, err
	}
	return w, h, nil
}

// writeChunk streams r onto w while hashing it into h, and advances u.Offset.
func (s *Store) writeChunk(w blobstore.Writer, u *Upload, h hash.Hash, r io.Reader, length int64) error {
	var n int64
	var err error
	if f, ok := w.(blobstore.Filler); ok {
		// The store buffers (S3 parts): no copy buffers of ours, and no local disk
		// to watch.
		n, err = f.Fill(r, h)
	} else {
		// Read up to the next block boundary first: the buffers that follow then
		// land block-aligned in the file and go to the disk directly.
		first := int((blobstore.BlockSize - u.Offset%blobstore.BlockSize) % blobstore.BlockSize)
		space := &spaceWriter{w: w, s: s}
		n, err = s.copyHashing(space, h, r, first)
		space.done()
	}
	if err == nil && length >= 0 && n != length {
		err = oci.ErrSizeInvalid.Withf("chunk has %d bytes, %d were announced", n, length)
	}
	if err != nil {
		return err
	}
	u.Offset += n
	return nil
}

// FinishUpload closes upload id: it appends the optional last chunk, verifies that the
// whole upload has digest d, commits the blob and links it to reg/repo. On a digest
// mismatch the upload stays open as it was before the request.
func (s *Store) FinishUpload(ctx context.Context, reg, repo, id string, d oci.Digest, start int64, r io.Reader, length int64) (int64, error) {
	_, unlock, err := s.lockUpload(ctx, id)
	if err != nil {
		return 0, err
	}
	defer unlock()
	u, err := s.GetUpload(ctx, reg, repo, id)
	if err != nil {
		return 0, err
	}
	if start >= 0 && start != u.Offset {
		return 0, oci.ErrRangeInvalid.Withf("chunk starts at %d, the upload has %d bytes", start, u.Offset)
	}
	if r != nil {
		if err := s.checkSpace(); err != nil {
			return 0, err
		}
	}
	if _, ok := s.blobs.(blobstore.Direct); ok && u.Offset == 0 && r != nil && u.Algorithm == d.Algorithm() {
		return s.finishDirect(ctx, u, d, r, length)
	}
	w, h, err := s.appendChunk(ctx, u, r, length)
	if errors.Is(err, errUploadFileGone) {
		return s.finishCommitted(ctx, u, d, r, length)
	}
	if err != nil {
		return 0, err
	}
	// On a mismatch the writer is closed unflushed: the upload stays as it was.
	defer w.Close()
	if err := s.verifyUpload(w, u, h, d); err != nil {
		return 0, err
	}
	if err := s.commitBlob(ctx, w, d, reg, repo, u.Offset, sessionKeys(u)...); err != nil {
		return 0, err
	}
	s.releaseSession(u)
	return u.Offset, nil
}

// finishDirect closes an empty session with its whole content in one request: the
// bytes go straight to the blob's place (blobstore.Direct), saving the copy a commit
// otherwise makes. On any failure (a digest mismatch) the session stays as it was.
func (s *Store) finishDirect(ctx context.Context, u *Upload, d oci.Digest, r io.Reader, length int64) (int64, error) {
	if err := s.storeWhole(ctx, u, d, r, length, sessionKeys(u)...); err != nil {
		return 0, err
	}
	s.releaseSession(u)
	return u.Offset, nil
}

// storeWhole writes blob d, all of it in r, for upload u (empty): it hashes, verifies
// and commits it, linking it to u's repository and deleting the keys in done in the
// same transaction. On any failure nothing of it is kept.
func (s *Store) storeWhole(ctx context.Context, u *Upload, d oci.Digest, r io.Reader, length int64, done ...[]byte) error {
	w, err := s.blobWriter(ctx, u.ID, d)
	if err != nil {
		return err
	}
	defer w.Close()
	h := u.Algorithm.New()
	err = s.writeChunk(w, u, h, r, length)
	if err == nil {
		err = s.verifyUpload(w, u, h, d)
	}
	if err == nil {
		err = s.commitBlob(ctx, w, d, u.Registry, u.Repo, u.Offset, done...)
	}
	if err != nil {
		w.Cancel()
	}
	return err
}

// blobWriter is a writer for the bytes of blob d: straight to its place where the
// store can (blobstore.Direct), else an ordinary upload.
func (s *Store) blobWriter(ctx context.Context, id string, d oci.Digest) (blobstore.Writer, error) {
	if direct, ok := s.blobs.(blobstore.Direct); ok {
		return direct.NewBlobWriter(ctx, id, d)
	}
	return s.blobs.NewWriter(ctx, id)
}

// errUploadFileGone: the session's data file is missing.
var errUploadFileGone = oci.ErrBlobUploadUnknown.Withf("the upload has no data file")

// finishCommitted completes a session whose data file is gone because an earlier
// attempt moved it into place as blob d and stopped (a crash) before recording it: the
// final chunk r is hashed onto the session's state, and only if the result is d — the
// client has shown it sent that content — and the blob is stored, is it linked.
func (s *Store) finishCommitted(ctx context.Context, u *Upload, d oci.Digest, r io.Reader, length int64) (int64, error) {
	h, err := u.hash()
	if err != nil {
		return 0, err
	}
	var n int64
	if r != nil {
		if n, err = io.Copy(h, r); err != nil {
			return 0, err
		}
	}
	if length >= 0 && n != length {
		return 0, oci.ErrSizeInvalid.Withf("chunk has %d bytes, %d were announced", n, length)
	}
	if d.Algorithm() != u.Algorithm || oci.FromHash(d.Algorithm(), h) != d {
		return 0, errUploadFileGone
	}
	size := u.Offset + n
	if stored, err := s.blobs.Stat(ctx, d); err != nil || stored != size {
		return 0, errUploadFileGone
	}
	if err := s.commitBlob(ctx, nil, d, u.Registry, u.Repo, size, sessionKeys(u)...); err != nil {
		return 0, err
	}
	s.releaseSession(u)
	return size, nil
}

// commitBlob moves a verified upload into place as blob d (w; nil when an earlier
// attempt did) and links it to reg/repo (deleting the keys in done, such as the upload
// session, in the same transaction). It holds the blob's lock so garbage collection
// cannot delete the blob between its arrival and its record's. An upload already
// moved into place by an earlier attempt that stopped before its index transaction (a
// crash) is taken as committed: only verified content is ever moved to a blob's place.
func (s *Store) commitBlob(ctx context.Context, w blobstore.Writer, d oci.Digest, reg, repo string, size int64, done ...[]byte) error {
	held, unlock, err := s.lockBlob(ctx, d)
	if err != nil {
		return err
	}
	defer unlock()
	if w != nil {
		if err := w.Commit(d); err != nil {
			stored, serr := s.blobs.Stat(ctx, d)
			if !errors.Is(err, blobstore.ErrNotExist) || serr != nil || stored != size {
				return err
			}
		}
	}
	if !s.locks.Holds(held) {
		// The lock went with the index's connection: a collection elsewhere may be
		// deleting these bytes. The client tries again; the bytes stay until then.
		return oci.ErrIndexUnavailable.Withf("the lock of blob %s was lost; try again", d)
	}
	return s.update(func(txn index.Txn) error {
		for _, k := range done {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return s.linkBlob(txn, reg, repo, d, size)
	})
}

// verifyUpload checks the upload's bytes against d, reading them back when the
// client finished with another algorithm than the one the upload was hashed with.
func (s *Store) verifyUpload(w blobstore.Writer, u *Upload, h hash.Hash, d oci.Digest) error {
	if d.Algorithm() != u.Algorithm {
		rc, err := w.ReadBack()
		if errors.Is(err, blobstore.ErrNotExist) {
			return errUploadFileGone
		}
		if err != nil {
			return err
		}
		defer rc.Close()
		h = d.Algorithm().New()
		if _, err := io.Copy(h, rc); err != nil {
			return err
		}
	}
	if got := oci.FromHash(d.Algorithm(), h); got != d {
		return oci.ErrDigestInvalid.WithDetail(map[string]string{"expected": string(d), "computed": string(got)})
	}
	return nil
}

// CancelUpload drops upload id and its data.
func (s *Store) CancelUpload(ctx context.Context, reg, repo, id string) error {
	_, unlock, err := s.lockUpload(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	u, err := s.GetUpload(ctx, reg, repo, id)
	if err != nil {
		return err
	}
	if err := s.updateFreeing(func(txn index.Txn) error { return deleteKeys(txn, sessionKeys(u)) }); err != nil {
		return err
	}
	s.releaseSession(u)
	return s.blobs.RemoveUpload(context.WithoutCancel(ctx), id)
}

// PutBlob stores a whole blob sent in one request and links it to reg/repo. While it
// runs it counts as one of the client's open uploads.
func (s *Store) PutBlob(ctx context.Context, reg, repo string, d oci.Digest, r io.Reader, length int64) (int64, error) {
	if err := s.checkSpace(); err != nil {
		return 0, err
	}
	client := clientOf(ctx)
	if err := s.sessions.acquire(client); err != nil {
		return 0, err
	}
	defer s.sessions.release(client)
	u := &Upload{ID: "mono-" + newID(), Registry: reg, Repo: repo, Algorithm: d.Algorithm()}
	if err := s.storeWhole(ctx, u, d, r, length); err != nil {
		return 0, err
	}
	return u.Offset, nil
}

// copyHashing copies r to w and into h. Reading the request body, hashing and writing
// run side by side on separate buffers, so an upload costs about as long as the
// slowest of the three rather than their sum. It stops reading at the first write
// error: a client must not keep sending into a copy that has failed. first, when not
// 0, is the size of the first read.
func (s *Store) copyHashing(w io.Writer, h hash.Hash, r io.Reader, first int) (int64, error) {
	bufs := s.buffers.take(copyBufsInFlight)
	defer s.buffers.give(bufs)
	if len(bufs) == 0 {
		return copySmall(w, h, r)
	}
	type chunk struct {
		buf     *[]byte
		n       int
		pending atomic.Int32 // hasher and writer still using buf
	}
	free := make(chan *[]byte, len(bufs))
	for _, b := range bufs {
		free <- b
	}
	release := func(c *chunk) {
		if c.pending.Add(-1) == 0 {
			free <- c.buf
		}
	}
	toHash := make(chan *chunk, len(bufs))
	toWrite := make(chan *chunk, len(bufs))
	hashed := make(chan struct{})
	written := make(chan error, 1)
	var failed atomic.Bool
	go func() {
		for c := range toHash {
			h.Write((*c.buf)[:c.n])
			release(c)
		}
		close(hashed)
	}()
	go func() {
		var err error
		for c := range toWrite {
			if err == nil {
				if _, err = w.Write((*c.buf)[:c.n]); err != nil {
					failed.Store(true)
				}
			}
			release(c)
		}
		written <- err
	}()
	var n int64
	var rerr error
	for rerr == nil && !failed.Load() {
		bp := <-free
		if failed.Load() {
			free <- bp
			break
		}
		buf := *bp
		if first > 0 {
			buf, first = buf[:min(first, len(buf))], 0
		}
		var nr int
		nr, rerr = fill(r, buf)
		if nr == 0 {
			free <- bp
			continue
		}
		c := &chunk{buf: bp, n: nr}
		c.pending.Store(2)
		toHash <- c
		toWrite <- c
		n += int64(nr)
	}
	close(toHash)
	close(toWrite)
	<-hashed
	werr := <-written
	for range bufs {
		<-free
	}
	if werr != nil {
		return n, werr
	}
	if rerr != io.EOF {
		return n, rerr
	}
	return n, nil
}

// copySmall is copyHashing through one small buffer, one step at a time: for when the
// shared pool is exhausted.
func copySmall(w io.Writer, h hash.Hash, r io.Reader) (int64, error) {
	buf := make([]byte, smallBufSize)
	var n int64
	for {
		nr, rerr := r.Read(buf)
		if nr > 0 {
			h.Write(buf[:nr])
			if _, err := w.Write(buf[:nr]); err != nil {
				return n, err
			}
			n += int64(nr)
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// fill reads until buf is full or r ends: request bodies arrive in small reads, and
// large writes keep syscalls few.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		k, err := r.Read(buf[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
