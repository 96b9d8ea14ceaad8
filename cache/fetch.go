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

	"github.com/dockyard/dockyard/blobstore"
	"github.com/dockyard/dockyard/oci"
)

// Fetch copies a blob in from elsewhere (an upstream registry) into the blob store
// while any number of readers stream it from a growing local file: the first byte
// reaches clients as soon as it arrives, and one download serves them all. The file is
// the upload's own where the store can share it (blobstore.Follower: the filesystem),
// or else a spool file that exists only while the fetch runs (unlinked at once, so a
// crash leaves nothing). Nothing is committed unless the bytes match the digest, and
// readers never receive the last byte of a blob that failed verification, so a client
// can never mistake corrupt content for complete content.
type Fetch struct {
	s     *Store
	ctx   context.Context
	d     oci.Digest
	size  int64 // -1 when unknown
	limit int64 // a blob of unknown size fails past this many bytes
	w     blobstore.Writer
	spool *os.File                 // nil when readers follow the writer's own file
	r     blobstore.ReaderAtCloser // shared by readers (ReadAt)

	mu      sync.Mutex
	cond    *sync.Cond
	written int64
	done    bool
	err     error
	readers int
}

// ErrCorrupt reports content whose bytes do not match its digest.
var ErrCorrupt = errors.New("content does not match its digest")

// ErrTooLarge reports a fetch of unknown size that went past its limit.
var ErrTooLarge = errors.New("content too large to cache")

// MaxUnknownFetch bounds a fetch whose size the source did not say, when the caller
// sets no limit of its own: registries send lengths, and a stream without one must not
// fill the disk.
const MaxUnknownFetch = 16 << 30

// NewFetch prepares to receive blob d of the given size (-1 if unknown: then it fails
// past limit bytes, and with limit 0 past MaxUnknownFetch). ctx bounds the whole fetch
// (not one reader's request).
func (s *Store) NewFetch(ctx context.Context, d oci.Digest, size, limit int64) (*Fetch, error) {
	if limit <= 0 {
		limit = MaxUnknownFetch
	}
	w, err := s.blobWriter(ctx, "fetch-"+newID(), d)
	if err != nil {
		return nil, err
	}
	f := &Fetch{s: s, ctx: ctx, d: d, size: size, limit: limit, w: w}
	if fw, ok := w.(blobstore.Follower); ok {
		f.r, err = fw.Follow()
	} else if f.spool, err = os.CreateTemp(s.spoolDir(), "fetch-"); err == nil {
		os.Remove(f.spool.Name())
		f.r = f.spool
	}
	if err != nil {
		w.Cancel()
		return nil, err
	}
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
		// Readers learn of the end first: a cancelled writer may truncate the file
		// they follow.
		f.mu.Lock()
		f.done, f.err = true, err
		f.cond.Broadcast()
		f.mu.Unlock()
		if err != nil {
			f.w.Cancel()
		}
		f.w.Close()
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
	return f.s.commitBlob(f.ctx, f.w, f.d, reg, repo, f.written)
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
	var dst io.Writer = f.w
	if f.spool != nil {
		// The spool first: readers may read what the counter says is written.
		dst = io.MultiWriter(f.spool, f.w)
	}
	space := &spaceWriter{w: dst, s: f.s}
	defer space.done()
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
				if f.size < 0 && f.written > f.limit {
					return fmt.Errorf("%w: %s, sent without a length, passed %d bytes", ErrTooLarge, f.d, f.limit)
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
// file is no longer shared (read the committed blob instead), or when it failed (a
// reader arriving then would only be cut short).
func (f *Fetch) Reader(ctx context.Context) (rc io.ReadCloser, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readers < 0 || f.done && f.err != nil {
		return nil, false
	}
	f.readers++
	r := &fetchReader{f: f, ctx: ctx}
	// A descriptor of its own (with its own offset) lets the reader hand file ranges to
	// the socket with sendfile; the shared one only serves ReadAt.
	if fd, ok := f.r.(interface{ Fd() uintptr }); ok {
		if own, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(fd.Fd()))); err == nil {
			r.own = own
		}
	}
	return r, true
}

// Started waits until readers may read a first byte or the fetch is over, and
// returns the fetch's error if it ended without a byte for readers (ctx's error if ctx
// ends first, noticed when the fetch next moves): a request can still answer a
// failure as an error rather than as a response cut short.
func (f *Fetch) Started(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for f.readable() == 0 && !f.done {
		if err := ctx.Err(); err != nil {
			return err
		}
		f.cond.Wait()
	}
	if f.readable() == 0 {
		return f.err
	}
	return nil
}

// release drops one user of the shared read descriptor (the filler counts as one).
func (f *Fetch) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readers--; f.readers < 0 {
		f.r.Close()
	}
}

// errShrunk is a reader's end when the file it follows holds less than the fetch
// said was written (a failed fetch's file, truncated).
var errShrunk = fmt.Errorf("%w: the download's file ended early", io.ErrUnexpectedEOF)

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
		if f.done && f.err != nil {
			// Failed: what is left unread is unverified, and its file may be gone.
			return avail, true, f.err
		}
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
		if err != nil {
			return total, err
		}
		if r.pos >= avail {
			if done {
				return total, nil
			}
			return total, io.ErrUnexpectedEOF
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
		if n == 0 {
			return total, errShrunk // never spin on a file shorter than it was
		}
	}
}

func (r *fetchReader) Read(p []byte) (int, error) {
	avail, done, err := r.wait()
	if err != nil {
		return 0, err
	}
	if r.pos >= avail {
		if done {
			return 0, io.EOF
		}
		return 0, io.ErrUnexpectedEOF
	}
	n := int(min(int64(len(p)), avail-r.pos))
	n, err = r.f.r.ReadAt(p[:n], r.pos)
	r.pos += int64(n)
	if err == io.EOF {
		err = nil
		if n == 0 {
			err = errShrunk
		}
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
