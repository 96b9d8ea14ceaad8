package cache

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"sync"

	"github.com/dockyard/dockyard/oci"
)

// Fetch copies a blob in from elsewhere (an upstream registry) while any number of
// readers stream it from the growing file: the first byte reaches clients as soon as
// it arrives, and one download serves them all. Nothing is committed unless the bytes
// match the digest, and readers never receive the last byte of a blob that failed
// verification, so a client can never mistake corrupt content for complete content.
type Fetch struct {
	s    *Store
	id   string
	d    oci.Digest
	size int64 // -1 when unknown
	w    *os.File
	r    *os.File // shared by readers (ReadAt)

	mu      sync.Mutex
	cond    *sync.Cond
	written int64
	done    bool
	err     error
	readers int
}

// ErrCorrupt reports content whose bytes do not match its digest.
var ErrCorrupt = errors.New("content does not match its digest")

// NewFetch prepares to receive blob d of the given size (-1 if unknown).
func (s *Store) NewFetch(d oci.Digest, size int64) (*Fetch, error) {
	fs, ok := s.blobs.(*FSBlobStore)
	if !ok {
		return nil, errors.New("cache: fetches need the filesystem blob store")
	}
	id := "fetch-" + newID()
	w, err := os.OpenFile(fs.uploadPath(id), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return nil, err
	}
	r, err := os.Open(fs.uploadPath(id))
	if err != nil {
		w.Close()
		return nil, err
	}
	f := &Fetch{s: s, id: id, d: d, size: size, w: w, r: r}
	f.cond = sync.NewCond(&f.mu)
	return f, nil
}

// Size is the announced size of the blob, -1 if unknown.
func (f *Fetch) Size() int64 { return f.size }

// Fill copies src into the store, then verifies, commits and links the blob to
// reg/repo. It returns when the blob is committed or has failed; readers follow along
// meanwhile.
func (f *Fetch) Fill(src io.Reader, reg, repo string) (err error) {
	defer func() {
		f.w.Close()
		if err != nil {
			f.s.blobs.RemoveUpload(f.id)
		}
		f.mu.Lock()
		f.done, f.err = true, err
		f.cond.Broadcast()
		f.mu.Unlock()
		f.release()
	}()
	h := f.d.Algorithm().New()
	if err := f.copy(src, h); err != nil {
		return err
	}
	if f.size >= 0 && f.written != f.size {
		return fmt.Errorf("%w: %s has %d bytes, %d were announced", ErrCorrupt, f.d, f.written, f.size)
	}
	if got := oci.FromHash(f.d.Algorithm(), h); got != f.d {
		return fmt.Errorf("%w: received bytes hash to %s, expected %s", ErrCorrupt, got, f.d)
	}
	if err := f.w.Sync(); err != nil {
		return err
	}
	return f.s.commitBlob(f.id, f.d, reg, repo, f.written)
}

// copy writes src to the file as it arrives, so readers see every byte at once, and
// hashes it alongside on another goroutine.
func (f *Fetch) copy(src io.Reader, h hash.Hash) error {
	type chunk struct {
		buf *[]byte
		n   int
	}
	pooled := f.s.buffers.take(copyBufsInFlight)
	defer f.s.buffers.give(pooled)
	bufs := pooled
	if len(bufs) == 0 {
		b := make([]byte, smallBufSize)
		bufs = []*[]byte{&b}
	}
	free := make(chan *[]byte, len(bufs))
	for _, b := range bufs {
		free <- b
	}
	toHash := make(chan chunk, len(bufs))
	hashed := make(chan struct{})
	go func() {
		for c := range toHash {
			h.Write((*c.buf)[:c.n])
			free <- c.buf
		}
		close(hashed)
	}()
	space := &spaceWriter{w: f.w, s: f.s}
	err := func() error {
		for {
			bp := <-free
			n, rerr := src.Read(*bp)
			if n == 0 {
				free <- bp
			} else {
				if _, err := space.Write((*bp)[:n]); err != nil {
					free <- bp
					return err
				}
				toHash <- chunk{bp, n}
				f.mu.Lock()
				f.written += int64(n)
				f.cond.Broadcast()
				f.mu.Unlock()
				if f.size >= 0 && f.written > f.size {
					return fmt.Errorf("%w: %s is longer than the announced %d bytes", ErrCorrupt, f.d, f.size)
				}
			}
			if rerr == io.EOF {
				return nil
			}
			if rerr != nil {
				return rerr
			}
		}
	}()
	close(toHash)
	<-hashed
	for range bufs {
		<-free
	}
	return err
}

// Reader streams the blob as it arrives. ok is false when the fetch is over and its
// file is no longer shared: read the committed blob instead.
func (f *Fetch) Reader(ctx context.Context) (rc io.ReadCloser, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readers < 0 {
		return nil, false
	}
	f.readers++
	r := &fetchReader{f: f, ctx: ctx}
	// A descriptor of its own (with its own offset) lets the reader hand file ranges to
	// the socket with sendfile; the shared one only serves ReadAt.
	if own, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(f.r.Fd()))); err == nil {
		r.own = own
	}
	return r, true
}

// release drops one user of the shared read descriptor (the filler counts as one).
func (f *Fetch) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readers--; f.readers < 0 {
		f.r.Close()
	}
}

type fetchReader struct {
	f      *Fetch
	ctx    context.Context
	own    *os.File // nil when /proc is unavailable
	pos    int64
	closed bool
}

// wait blocks until bytes past r.pos may be read or the fetch is over, and returns how
// far reading may go.
func (r *fetchReader) wait() (avail int64, done bool, err error) {
	f := r.f
	f.mu.Lock()
	defer f.mu.Unlock()
	for {
		avail = f.readable()
		if r.pos < avail || f.done {
			return avail, f.done, f.err
		}
		if err := r.ctx.Err(); err != nil {
			return avail, false, err
		}
		f.cond.Wait()
	}
}

// WriteTo sends the blob to w as it arrives, with sendfile when w can take a file.
func (r *fetchReader) WriteTo(w io.Writer) (int64, error) {
	rf, ok := w.(io.ReaderFrom)
	if !ok || r.own == nil {
		return io.Copy(w, struct{ io.Reader }{r})
	}
	var total int64
	for {
		avail, done, err := r.wait()
		if r.pos >= avail {
			if done && err == nil {
				return total, nil
			}
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return total, err
		}
		if _, err := r.own.Seek(r.pos, io.SeekStart); err != nil {
			return total, err
		}
		n, err := rf.ReadFrom(io.LimitReader(r.own, avail-r.pos))
		r.pos += n
		total += n
		if err != nil {
			return total, err
		}
	}
}

func (r *fetchReader) Read(p []byte) (int, error) {
	avail, done, err := r.wait()
	if r.pos >= avail {
		if done && err == nil {
			return 0, io.EOF
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	n := int(min(int64(len(p)), avail-r.pos))
	n, err = r.f.r.ReadAt(p[:n], r.pos)
	r.pos += int64(n)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// readable is how much readers may have: everything once verified, else all but the
// last byte, which is held back until the digest is checked. Call with mu held.
func (f *Fetch) readable() int64 {
	if f.done && f.err == nil {
		return f.written
	}
	return max(f.written-1, 0)
}

func (r *fetchReader) Close() error {
	if !r.closed {
		r.closed = true
		if r.own != nil {
			r.own.Close()
		}
		r.f.release()
	}
	return nil
}
