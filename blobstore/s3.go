package blobstore

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/dockyard/dockyard/oci"
)

// S3Options configure an S3 store.
type S3Options struct {
	// Endpoint is the server's URL; empty means AWS.
	Endpoint  string
	Region    string
	Bucket    string
	Prefix    string
	PathStyle bool
	// RedirectExpiry, when set, makes the store a Redirector whose URLs last that long.
	RedirectExpiry time.Duration
	// PartSize is the multipart part size (at least 5 MiB).
	PartSize int64
	// CAFile adds a CA for the endpoint's TLS certificate.
	CAFile string
	// AccessKeyID and SecretAccessKey are static credentials; empty means the AWS
	// default chain (environment, shared files, instance roles).
	AccessKeyID, SecretAccessKey string
	// BufferMemory bounds the memory of part buffers shared by all uploads (default
	// 64 MiB, at least two parts): uploads wait for a buffer rather than grow the
	// process.
	BufferMemory int64
	// StallTimeout bounds a wait for S3's next bytes while reading an object
	// (default 60s): a stalled response fails instead of holding its request forever.
	StallTimeout time.Duration
	// BufferWait is how long an upload waits for a free part buffer before it is
	// answered 429 (default 30s).
	BufferWait time.Duration
	// Attempts is how many times a request is tried (default 5).
	Attempts int
}

// MinPartSize is the smallest part S3 accepts in a multipart upload (but the last).
const MinPartSize = 5 << 20

// maxCopySize is the largest object one CopyObject may copy.
const maxCopySize = 5 << 30

// S3 keeps blobs as objects <prefix>blobs/<alg>/<first two hex>/<hex> of one bucket.
//
// An upload is staged in the bucket under <prefix>uploads/<id>/: its full parts go to
// a multipart upload of the key …/data as they fill, and each Flush writes a state
// object …/state-<offset> holding the part list and the bytes past the last part (at
// most a part). A later request — after a restart, or on another instance — resumes
// from the state at the offset the index recorded; state objects of later offsets are
// the traces of chunks that failed, and the one a state superseded is deleted when
// resuming proves the index moved past it. Commit sends the last bytes as the final
// part, completes the multipart upload and copies the object into place server-side,
// so a large blob is never downloaded and uploaded again. A blob under one part is a
// single PUT.
type S3 struct {
	client  *s3.Client
	presign *s3.PresignClient
	opts    S3Options
	bufs    chan []byte // free part buffers
	tokens  chan struct{}

	// active counts the writers open in this process by upload id and by multipart
	// upload: WalkUploads does not report them, so a purge never removes an upload
	// still being written (a long monolithic push or proxy fill has no session).
	mu     sync.Mutex
	active map[string]int
}

func (s *S3) hold(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if id != "" {
			s.active[id]++
		}
	}
}

func (s *S3) release(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		if s.active[id]--; s.active[id] <= 0 {
			delete(s.active, id)
		}
	}
}

func (s *S3) isActive(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[id] > 0
}

// NewS3 connects to the bucket (it checks that the bucket answers).
func NewS3(ctx context.Context, o S3Options) (*S3, error) {
	if o.PartSize == 0 {
		o.PartSize = 16 << 20
	}
	if o.PartSize < MinPartSize {
		return nil, fmt.Errorf("s3 part size %d is under S3's minimum of 5 MiB", o.PartSize)
	}
	if o.BufferMemory <= 0 {
		o.BufferMemory = 64 << 20
	}
	if o.Attempts <= 0 {
		o.Attempts = 5
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 60 * time.Second
	}
	if o.BufferWait <= 0 {
		o.BufferWait = 30 * time.Second
	}
	if o.Prefix != "" && !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	httpClient, err := s3HTTPClient(o.CAFile)
	if err != nil {
		return nil, err
	}
	loads := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithHTTPClient(httpClient),
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = o.Attempts
				so.MaxBackoff = 5 * time.Second
				// Every request gets its retries, however many failed before: a store
				// coming back must not find the retry budget spent.
				so.RateLimiter = ratelimit.None
				// versitygw's posix backend removes a directory a delete left empty; a
				// write into it racing that removal fails with this code, and succeeds
				// when sent again. dockyard's keys never name a directory (no key is a
				// prefix of another plus "/"), so the code means only that race here.
				so.Retryables = append(so.Retryables, retry.RetryableErrorCode{
					Codes: map[string]struct{}{"ExistingObjectIsDirectory": {}},
				})
			})
		}),
		// Servers other than AWS may not know the newer checksum headers: send and
		// check checksums only where an operation requires them.
		awsconfig.WithRequestChecksumCalculation(aws.RequestChecksumCalculationWhenRequired),
		awsconfig.WithResponseChecksumValidation(aws.ResponseChecksumValidationWhenRequired),
	}
	if o.Region != "" {
		loads = append(loads, awsconfig.WithRegion(o.Region))
	}
	if o.AccessKeyID != "" {
		loads = append(loads, awsconfig.WithCredentialsProvider(
			credentials.NewStaticCredentialsProvider(o.AccessKeyID, o.SecretAccessKey, "")))
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, loads...)
	if err != nil {
		return nil, fmt.Errorf("s3 configuration: %w", err)
	}
	client := s3.NewFromConfig(cfg, func(so *s3.Options) {
		if o.Endpoint != "" {
			so.BaseEndpoint = aws.String(o.Endpoint)
		}
		so.UsePathStyle = o.PathStyle
	})
	n := max(2, int(o.BufferMemory/o.PartSize))
	s := &S3{client: client, presign: s3.NewPresignClient(client), opts: o,
		bufs: make(chan []byte, n), tokens: make(chan struct{}, n), active: map[string]int{}}
	for range n {
		s.tokens <- struct{}{}
	}
	if _, err := client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: &o.Bucket}); err != nil {
		return nil, s.fail("HeadBucket", err)
	}
	return s, nil
}

// s3HTTPClient is the SDK's buildable client (so that AWS_CA_BUNDLE still applies)
// with bounded connection and header waits, and the extra CA of ca_file.
func s3HTTPClient(caFile string) (*awshttp.BuildableClient, error) {
	var pool *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("s3 ca_file: %w", err)
		}
		if pool, err = x509.SystemCertPool(); err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("s3 ca_file %s holds no PEM certificate", caFile)
		}
	}
	return awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) { d.Timeout = 5 * time.Second }).
		WithTransportOptions(func(tr *http.Transport) {
			tr.ResponseHeaderTimeout = 60 * time.Second
			tr.MaxIdleConnsPerHost = 64
			if pool != nil {
				if tr.TLSClientConfig == nil {
					tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
				}
				tr.TLSClientConfig.RootCAs = pool
			}
		}), nil
}

func (s *S3) String() string {
	where := s.opts.Endpoint
	if where == "" {
		where = "AWS"
	}
	name := "s3 bucket " + s.opts.Bucket
	if s.opts.Prefix != "" {
		name += " prefix " + s.opts.Prefix
	}
	return name + " at " + where
}

// fail turns a failed S3 request into an error for the client that names the storage
// (and nothing more of it), with the whole cause behind it for the log.
func (s *S3) fail(op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "NoSuchUpload" {
		// The multipart upload an upload's state names is gone (completed by a commit
		// that then failed, or aborted): it cannot continue, and saying "try again"
		// would be a lie.
		return fmt.Errorf("%w: %w: %w", ErrNotExist, oci.ErrBlobUploadUnknown.Withf(
			"the upload's data in the blob storage is gone (%s); start the upload again", op), err)
	}
	return fmt.Errorf("%w: %w", oci.ErrStorageUnavailable.Withf("the blob storage (%s) failed to %s; try again", s, op), err)
}

func isNotFound(err error) bool {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
		return true
	}
	var nsk *types.NoSuchKey
	var nf *types.NotFound
	var nsu *types.NoSuchUpload
	return errors.As(err, &nsk) || errors.As(err, &nf) || errors.As(err, &nsu)
}

func (s *S3) blobKey(d oci.Digest) string {
	enc := d.Encoded()
	return s.opts.Prefix + "blobs/" + string(d.Algorithm()) + "/" + enc[:2] + "/" + enc
}

func (s *S3) uploadDir(id string) string { return s.opts.Prefix + "uploads/" + id + "/" }
func (s *S3) dataKey(id string) string   { return s.uploadDir(id) + "data" }
func (s *S3) stateKey(id string, off int64) string {
	return s.uploadDir(id) + fmt.Sprintf("state-%016x", off)
}

func (s *S3) Stat(ctx context.Context, d oci.Digest) (int64, error) {
	out, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &s.opts.Bucket, Key: aws.String(s.blobKey(d))})
	if isNotFound(err) {
		return 0, fmt.Errorf("%w: %s", ErrNotExist, d)
	}
	if err != nil {
		return 0, s.fail("look up a blob", err)
	}
	return aws.ToInt64(out.ContentLength), nil
}

func (s *S3) Open(ctx context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error) {
	// The body is read after the handler that opened it returned: the reader lives
	// until it is closed, not as long as the request's context.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &s3Reader{s: s, ctx: rctx, cancel: cancel, key: s.blobKey(d)}
	out, err := s.client.GetObject(rctx, &s3.GetObjectInput{Bucket: &s.opts.Bucket, Key: &r.key})
	if err != nil {
		cancel()
		if isNotFound(err) {
			return nil, 0, fmt.Errorf("%w: %s", ErrNotExist, d)
		}
		return nil, 0, s.fail("read a blob", err)
	}
	r.body, r.size = out.Body, aws.ToInt64(out.ContentLength)
	r.end = r.size
	return r, r.size, nil
}

// s3Reader reads an object from where it stands: the first GET (made by Open) reads
// from the start, a Seek elsewhere drops it and the next Read asks for a range, up to
// the end a Limit set (a range request's last byte) or the object's.
type s3Reader struct {
	s      *S3
	ctx    context.Context
	cancel context.CancelFunc
	key    string
	body   io.ReadCloser
	pos    int64
	size   int64
	end    int64 // reads stop here (size unless limited)
}

// Limit ends the reader n bytes past where it stands (see blobstore.Limiter).
func (r *s3Reader) Limit(n int64) {
	if end := min(r.pos+n, r.size); end != r.end {
		r.end = end
		if r.body != nil && r.pos != 0 {
			r.body.Close()
			r.body = nil
		}
	}
}

func (r *s3Reader) Read(p []byte) (int, error) {
	if r.pos >= r.end {
		return 0, io.EOF
	}
	if r.body == nil {
		rng := "bytes=" + strconv.FormatInt(r.pos, 10) + "-" + strconv.FormatInt(r.end-1, 10)
		out, err := r.s.client.GetObject(r.ctx, &s3.GetObjectInput{Bucket: &r.s.opts.Bucket, Key: &r.key, Range: &rng})
		if err != nil {
			return 0, r.s.fail("read a blob", err)
		}
		r.body = out.Body
	}
	p = p[:min(int64(len(p)), r.end-r.pos)]
	// A wait for S3 (not for the client, which Read does not see) is bounded: past
	// it the reader's context is cancelled and the read fails.
	var stalled atomic.Bool
	watch := time.AfterFunc(r.s.opts.StallTimeout, func() { stalled.Store(true); r.cancel() })
	n, err := r.body.Read(p)
	if !watch.Stop() && err != nil {
		for !stalled.Load() {
			runtime.Gosched()
		}
		return n, r.s.fail("read a blob", fmt.Errorf("no data from S3 for %v", r.s.opts.StallTimeout))
	}
	r.pos += int64(n)
	if err == io.EOF && r.pos < r.end {
		err = io.ErrUnexpectedEOF
	}
	if err == nil && r.pos == r.end {
		err = io.EOF
	}
	return n, err
}

// copyBufs are the buffers WriteTo sends a blob through: large writes keep the
// syscalls of a big GET few.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// WriteTo sends the rest of the object (up to the limit) to w.
func (r *s3Reader) WriteTo(w io.Writer) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	var total int64
	for {
		n, err := io.ReadFull(r, *bp)
		if n > 0 {
			if _, werr := w.Write((*bp)[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			if r.pos < r.end {
				return total, io.ErrUnexpectedEOF
			}
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (r *s3Reader) Seek(offset int64, whence int) (int64, error) {
	pos := offset
	switch whence {
	case io.SeekCurrent:
		pos += r.pos
	case io.SeekEnd:
		pos += r.size
	}
	if pos < 0 {
		return 0, errors.New("blobstore: seek before the start")
	}
	if pos != r.pos && r.body != nil {
		r.body.Close()
		r.body = nil
	}
	r.pos, r.end = pos, r.size
	return pos, nil
}

func (r *s3Reader) Close() error {
	if r.body != nil {
		r.body.Close()
	}
	r.cancel()
	return nil
}

func (s *S3) Delete(ctx context.Context, d oci.Digest) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.opts.Bucket, Key: aws.String(s.blobKey(d))})
	if err != nil && !isNotFound(err) {
		return s.fail("delete a blob", err)
	}
	return nil
}

// list calls fn for every object under prefix, a page at a time.
func (s *S3) list(ctx context.Context, prefix string, fn func(types.Object) error) error {
	p := s3.NewListObjectsV2Paginator(s.client, &s3.ListObjectsV2Input{Bucket: &s.opts.Bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.fail("list objects", err)
		}
		for _, o := range page.Contents {
			if err := fn(o); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *S3) Walk(ctx context.Context, fn func(Blob) error) error {
	prefix := s.opts.Prefix + "blobs/"
	return s.list(ctx, prefix, func(o types.Object) error {
		parts := strings.Split(strings.TrimPrefix(aws.ToString(o.Key), prefix), "/")
		if len(parts) != 3 {
			return nil
		}
		d, err := oci.ParseDigest(parts[0] + ":" + parts[2])
		if err != nil {
			return nil
		}
		return fn(Blob{Digest: d, Size: aws.ToInt64(o.Size), ModTime: aws.ToTime(o.LastModified)})
	})
}

// WalkUploads reports every upload with objects under uploads/ (listed in key order,
// so an upload's objects come together), then multipart uploads whose upload has no
// object (a crash between starting the multipart upload and its first state).
func (s *S3) WalkUploads(ctx context.Context, fn func(Upload) error) error {
	prefix := s.opts.Prefix + "uploads/"
	seen := map[string]bool{}
	var cur Upload
	emit := func() error {
		if cur.ID == "" {
			return nil
		}
		seen[cur.ID] = true
		return fn(cur)
	}
	err := s.list(ctx, prefix, func(o types.Object) error {
		id, _, ok := strings.Cut(strings.TrimPrefix(aws.ToString(o.Key), prefix), "/")
		if !ok {
			return nil
		}
		mod := aws.ToTime(o.LastModified)
		if s.isActive(id) {
			return nil
		}
		if id != cur.ID {
			if err := emit(); err != nil {
				return err
			}
			cur = Upload{ID: id, ModTime: mod}
		} else if mod.After(cur.ModTime) {
			cur.ModTime = mod
		}
		return nil
	})
	if err == nil {
		err = emit()
	}
	if err != nil {
		return err
	}
	err = s.listMultipart(ctx, prefix, func(u types.MultipartUpload) error {
		id, _, ok := strings.Cut(strings.TrimPrefix(aws.ToString(u.Key), prefix), "/")
		if !ok || seen[id] || s.isActive(id) {
			return nil
		}
		seen[id] = true
		return fn(Upload{ID: id, ModTime: aws.ToTime(u.Initiated)})
	})
	if err != nil {
		return err
	}
	// Direct writes (NewBlobWriter) a crash interrupted: multipart uploads at blob
	// keys, invisible as objects, named here so that RemoveUpload can abort them.
	return s.listMultipart(ctx, s.opts.Prefix+"blobs/", func(u types.MultipartUpload) error {
		if s.isActive(aws.ToString(u.UploadId)) {
			return nil
		}
		return fn(Upload{ID: directPrefix + aws.ToString(u.UploadId) + " " + aws.ToString(u.Key), ModTime: aws.ToTime(u.Initiated)})
	})
}

// directPrefix starts the upload ids WalkUploads gives interrupted direct writes.
const directPrefix = "direct "

func (s *S3) listMultipart(ctx context.Context, prefix string, fn func(types.MultipartUpload) error) error {
	in := &s3.ListMultipartUploadsInput{Bucket: &s.opts.Bucket, Prefix: &prefix}
	for {
		out, err := s.client.ListMultipartUploads(ctx, in)
		if err != nil {
			return s.fail("list multipart uploads", err)
		}
		for _, u := range out.Uploads {
			if err := fn(u); err != nil {
				return err
			}
		}
		if !aws.ToBool(out.IsTruncated) || (out.NextKeyMarker == nil && out.NextUploadIdMarker == nil) {
			return nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

func (s *S3) RemoveUpload(ctx context.Context, id string) error {
	if rest, ok := strings.CutPrefix(id, directPrefix); ok {
		uploadID, key, _ := strings.Cut(rest, " ")
		_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.opts.Bucket, Key: &key, UploadId: &uploadID})
		if err != nil && !isNotFound(err) {
			return s.fail("abort a multipart upload", err)
		}
		return nil
	}
	dir := s.uploadDir(id)
	err := s.listMultipart(ctx, dir, func(u types.MultipartUpload) error {
		_, err := s.client.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &s.opts.Bucket, Key: u.Key, UploadId: u.UploadId})
		if err != nil && !isNotFound(err) {
			return s.fail("abort a multipart upload", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.list(ctx, dir, func(o types.Object) error {
		_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.opts.Bucket, Key: o.Key})
		if err != nil && !isNotFound(err) {
			return s.fail("delete an upload", err)
		}
		return nil
	})
}

// ownerKey names the object that records which index the prefix belongs to.
func (s *S3) ownerKey() string { return s.opts.Prefix + "dockyard-index" }

// Claim records owner in the prefix's owner object, or checks that it is the one
// there.
func (s *S3) Claim(ctx context.Context, owner string) error {
	key := s.ownerKey()
	got, found, err := s.owner(ctx)
	if err != nil {
		return err
	}
	if !found {
		// Created only if absent (a conditional write): of two indexes claiming at
		// once, one wins; both read the winner back, on servers that ignore the
		// condition too.
		_, err = s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: &s.opts.Bucket, Key: &key, IfNoneMatch: aws.String("*"),
			Body: strings.NewReader(owner), ContentLength: aws.Int64(int64(len(owner)))})
		var re *awshttp.ResponseError
		if err != nil && !(errors.As(err, &re) && (re.HTTPStatusCode() == http.StatusPreconditionFailed || re.HTTPStatusCode() == http.StatusConflict)) {
			return s.fail("record the index it belongs to", err)
		}
		if got, found, err = s.owner(ctx); err != nil {
			return err
		}
	}
	if !found || got != owner {
		return fmt.Errorf("the blobs under prefix %q of %s belong to another dockyard index (%s), not this data directory's (%s): "+
			"give each index its own prefix. If that index was lost, do not start an empty one over its blobs (its garbage "+
			"collection would delete them); restore the data directory, or delete the object %s only once you mean to start over",
			s.opts.Prefix, s, got, owner, key)
	}
	return nil
}

// owner reads the prefix's owner object.
func (s *S3) owner(ctx context.Context) (string, bool, error) {
	out, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: &s.opts.Bucket, Key: aws.String(s.ownerKey())})
	if isNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, s.fail("read the index it belongs to", err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(io.LimitReader(out.Body, 1024))
	if err != nil {
		return "", false, s.fail("read the index it belongs to", err)
	}
	return strings.TrimSpace(string(b)), true, nil
}

// RedirectURL presigns a GET of blob d.
func (s *S3) RedirectURL(ctx context.Context, d oci.Digest) (string, error) {
	req, err := s.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &s.opts.Bucket, Key: aws.String(s.blobKey(d))},
		s3.WithPresignExpires(s.opts.RedirectExpiry))
	if err != nil {
		return "", s.fail("presign a blob URL", err)
	}
	return req.URL, nil
}

// Redirects tells whether blob GETs should be redirected to presigned URLs.
func (s *S3) Redirects() bool { return s.opts.RedirectExpiry > 0 }

// takeBuffer waits for a free part buffer.
func (s *S3) takeBuffer(ctx context.Context) ([]byte, error) {
	select {
	case b := <-s.bufs:
		return b[:0], nil
	default:
	}
	select {
	case b := <-s.bufs:
		return b[:0], nil
	case <-s.tokens:
		return partBuffer(int(s.opts.PartSize))[:0], nil
	default:
	}
	// Every buffer is taken (slow clients hold theirs while their bodies trickle in):
	// wait a while, then tell the client to come back rather than hang.
	t := time.NewTimer(s.opts.BufferWait)
	defer t.Stop()
	select {
	case b := <-s.bufs:
		return b[:0], nil
	case <-s.tokens:
		return partBuffer(int(s.opts.PartSize))[:0], nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-t.C:
		e := oci.ErrTooManyRequests.Withf("every upload buffer of the blob storage is in use; retry shortly")
		e.RetryAfter = "5"
		return nil, e
	}
}

func (s *S3) giveBuffer(b []byte) {
	if b != nil {
		s.bufs <- b
	}
}

// s3State is what a state object records before the bytes past the last part.
type s3State struct {
	UploadID string   `json:"upload_id,omitempty"`
	Parts    []s3Part `json:"parts,omitempty"`
	// Prev is the offset of the state this one superseded.
	Prev int64 `json:"prev"`
}

type s3Part struct {
	N    int32  `json:"n"`
	ETag string `json:"etag"`
	Size int64  `json:"size"`
}

// NewBlobWriter writes blob d in place (see Direct).
func (s *S3) NewBlobWriter(ctx context.Context, id string, d oci.Digest) (Writer, error) {
	s.hold(id)
	return &s3Writer{s: s, ctx: ctx, id: id, flushed: -1, target: s.blobKey(d)}, nil
}

func (s *S3) NewWriter(ctx context.Context, id string) (Writer, error) {
	s.hold(id)
	w := &s3Writer{s: s, ctx: ctx, id: id, flushed: -1}
	if err := w.Flush(); err != nil {
		w.Close()
		return nil, err
	}
	return w, nil
}

func (s *S3) ResumeWriter(ctx context.Context, id string, offset int64) (Writer, error) {
	// A state is small: reading it is bounded as a whole.
	sctx, cancel := context.WithTimeout(ctx, s.opts.StallTimeout)
	defer cancel()
	out, err := s.client.GetObject(sctx, &s3.GetObjectInput{Bucket: &s.opts.Bucket, Key: aws.String(s.stateKey(id, offset))})
	if isNotFound(err) {
		return nil, fmt.Errorf("%w: upload %s has no state at %d", ErrNotExist, id, offset)
	}
	if err != nil {
		return nil, s.fail("resume an upload", err)
	}
	defer out.Body.Close()
	var hdr [4]byte
	if _, err := io.ReadFull(out.Body, hdr[:]); err != nil {
		return nil, s.fail("resume an upload", err)
	}
	meta := make([]byte, binary.BigEndian.Uint32(hdr[:]))
	if _, err := io.ReadFull(out.Body, meta); err != nil {
		return nil, s.fail("resume an upload", err)
	}
	var st s3State
	if err := json.Unmarshal(meta, &st); err != nil {
		return nil, fmt.Errorf("upload %s: state at %d: %w", id, offset, err)
	}
	s.hold(id, st.UploadID)
	w := &s3Writer{s: s, ctx: ctx, id: id, uploadID: st.UploadID, parts: st.Parts, size: offset, flushed: offset}
	for _, p := range st.Parts {
		w.partsSize += p.Size
	}
	tail := offset - w.partsSize
	if tail < 0 || tail > s.opts.PartSize {
		w.Close()
		return nil, fmt.Errorf("upload %s: state at %d holds %d bytes of parts", id, offset, w.partsSize)
	}
	if tail > 0 {
		if w.buf, err = s.takeBuffer(ctx); err != nil {
			return nil, err
		}
		w.buf = w.buf[:tail]
		if _, err := io.ReadFull(out.Body, w.buf); err != nil {
			w.Close()
			return nil, s.fail("resume an upload", err)
		}
	}
	if st.Prev != offset {
		// The index recorded this offset, so the state before it is not needed.
		s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &s.opts.Bucket, Key: aws.String(s.stateKey(id, st.Prev))})
	}
	return w, nil
}

// s3Writer writes an upload: full parts go to the multipart upload as they fill; buf
// holds the bytes past the last part.
type s3Writer struct {
	s         *S3
	ctx       context.Context
	id        string
	uploadID  string
	parts     []s3Part
	partsSize int64
	buf       []byte
	size      int64
	flushed   int64  // offset of the last state written, -1 before the first
	target    string // a direct writer's blob key (the multipart upload's), or ""
	assembled bool   // the multipart upload was completed into the data object
	closed    bool
	mu        sync.Mutex
	// A full part is sent while the next one fills: inflight delivers the sent part
	// (and its buffer, for reuse), spare is a free buffer of this writer.
	inflight chan sentPart
	spare    []byte
}

type sentPart struct {
	part s3Part
	buf  []byte
	err  error
}

func (w *s3Writer) Write(p []byte) (int, error) {
	if w.assembled || w.closed {
		return 0, errors.New("blobstore: write to a finished upload")
	}
	written := 0
	for len(p) > 0 {
		if w.buf == nil {
			b, err := w.s.takeBuffer(w.ctx)
			if err != nil {
				return written, err
			}
			w.buf = b
		}
		n := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+n]
		p = p[n:]
		written += n
		w.size += int64(n)
		if int64(len(w.buf)) == w.s.opts.PartSize {
			if err := w.sendPart(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// Fill reads r into the part buffers directly (see Filler).
func (w *s3Writer) Fill(r io.Reader, h io.Writer) (int64, error) {
	if w.assembled || w.closed {
		return 0, errors.New("blobstore: write to a finished upload")
	}
	var n int64
	for {
		if w.buf == nil {
			b, err := w.s.takeBuffer(w.ctx)
			if err != nil {
				return n, err
			}
			w.buf = b
		}
		k, rerr := r.Read(w.buf[len(w.buf):cap(w.buf)])
		if k > 0 {
			h.Write(w.buf[len(w.buf) : len(w.buf)+k])
			w.buf = w.buf[:len(w.buf)+k]
			w.size += int64(k)
			n += int64(k)
			if int64(len(w.buf)) == w.s.opts.PartSize {
				if err := w.sendPart(); err != nil {
					return n, err
				}
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// sendPart starts sending the full buf as the next part, once the part before it is
// in, and goes on with another buffer: its own spare, a free one of the pool, or — the
// pool being empty — the sent part's, once sent.
func (w *s3Writer) sendPart() error {
	if err := w.waitPart(); err != nil {
		return err
	}
	if err := w.startMultipart(); err != nil {
		return err
	}
	buf := w.buf
	n := int32(len(w.parts) + 1)
	done := make(chan sentPart, 1)
	w.inflight = done
	go func() {
		out, err := w.s.client.UploadPart(w.ctx, &s3.UploadPartInput{Bucket: &w.s.opts.Bucket, Key: aws.String(w.mpKey()),
			UploadId: &w.uploadID, PartNumber: &n, Body: bytes.NewReader(buf), ContentLength: aws.Int64(int64(len(buf)))})
		if err != nil {
			done <- sentPart{buf: buf, err: w.s.fail("upload a part", err)}
			return
		}
		done <- sentPart{part: s3Part{N: n, ETag: aws.ToString(out.ETag), Size: int64(len(buf))}, buf: buf}
	}()
	switch {
	case w.spare != nil:
		w.buf, w.spare = w.spare[:0], nil
	default:
		select {
		case b := <-w.s.bufs:
			w.buf = b[:0]
		case <-w.s.tokens:
			w.buf = partBuffer(int(w.s.opts.PartSize))[:0]
		default:
			w.buf = nil
			if err := w.waitPart(); err != nil {
				return err
			}
			w.buf, w.spare = w.spare[:0], nil
		}
	}
	return nil
}

// waitPart waits for the part being sent, if any, and records it.
func (w *s3Writer) waitPart() error {
	if w.inflight == nil {
		return nil
	}
	r := <-w.inflight
	w.inflight = nil
	w.spare = r.buf[:0]
	if r.err != nil {
		return r.err
	}
	w.parts = append(w.parts, r.part)
	w.partsSize += r.part.Size
	return nil
}

func (w *s3Writer) startMultipart() error {
	if w.uploadID != "" {
		return nil
	}
	out, err := w.s.client.CreateMultipartUpload(w.ctx, &s3.CreateMultipartUploadInput{
		Bucket: &w.s.opts.Bucket, Key: aws.String(w.mpKey())})
	if err != nil {
		return w.s.fail("start a multipart upload", err)
	}
	w.uploadID = aws.ToString(out.UploadId)
	w.s.hold(w.uploadID)
	return nil
}

// uploadPart sends buf as the next part and waits for it.
func (w *s3Writer) uploadPart() error {
	if err := w.waitPart(); err != nil {
		return err
	}
	if err := w.startMultipart(); err != nil {
		return err
	}
	n := int32(len(w.parts) + 1)
	out, err := w.s.client.UploadPart(w.ctx, &s3.UploadPartInput{Bucket: &w.s.opts.Bucket, Key: aws.String(w.mpKey()),
		UploadId: &w.uploadID, PartNumber: &n, Body: bytes.NewReader(w.buf), ContentLength: aws.Int64(int64(len(w.buf)))})
	if err != nil {
		return w.s.fail("upload a part", err)
	}
	w.parts = append(w.parts, s3Part{N: n, ETag: aws.ToString(out.ETag), Size: int64(len(w.buf))})
	w.partsSize += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

func (w *s3Writer) Size() int64 { return w.size }

// mpKey is the key of the writer's multipart upload.
func (w *s3Writer) mpKey() string {
	if w.target != "" {
		return w.target
	}
	return w.s.dataKey(w.id)
}

var errDirect = errors.New("blobstore: a direct blob writer cannot be saved or read back")

// Flush writes the state at Size: the part list, then the bytes past the last part.
func (w *s3Writer) Flush() error {
	if w.target != "" {
		return errDirect
	}
	if err := w.waitPart(); err != nil {
		return err
	}
	if w.flushed == w.size {
		return nil
	}
	st := s3State{UploadID: w.uploadID, Parts: w.parts, Prev: max(w.flushed, 0)}
	meta, err := json.Marshal(st)
	if err != nil {
		return err
	}
	body := make([]byte, 4, 4+len(meta))
	binary.BigEndian.PutUint32(body, uint32(len(meta)))
	body = append(body, meta...)
	r := &twoSlices{a: body, b: w.buf}
	_, err = w.s.client.PutObject(w.ctx, &s3.PutObjectInput{Bucket: &w.s.opts.Bucket, Key: aws.String(w.s.stateKey(w.id, w.size)),
		Body: r, ContentLength: aws.Int64(int64(len(body) + len(w.buf)))})
	if err != nil {
		return w.s.fail("save an upload", err)
	}
	w.flushed = w.size
	return nil
}

// assemble completes the multipart upload (its last part being buf) into the data
// object.
func (w *s3Writer) assemble() error {
	if w.assembled {
		return nil
	}
	if len(w.buf) > 0 {
		if err := w.uploadPart(); err != nil {
			return err
		}
	}
	parts := make([]types.CompletedPart, len(w.parts))
	for i, p := range w.parts {
		parts[i] = types.CompletedPart{PartNumber: aws.Int32(p.N), ETag: aws.String(p.ETag)}
	}
	_, err := w.s.client.CompleteMultipartUpload(w.ctx, &s3.CompleteMultipartUploadInput{Bucket: &w.s.opts.Bucket,
		Key: aws.String(w.mpKey()), UploadId: &w.uploadID, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		return w.s.fail("complete a multipart upload", err)
	}
	w.assembled = true
	return nil
}

func (w *s3Writer) ReadBack() (io.ReadCloser, error) {
	if w.target != "" {
		return nil, errDirect
	}
	if err := w.waitPart(); err != nil {
		return nil, err
	}
	if w.uploadID == "" {
		return io.NopCloser(bytes.NewReader(w.buf)), nil
	}
	if err := w.assemble(); err != nil {
		return nil, err
	}
	// The multipart upload is gone: no state can be resumed any more.
	w.s.list(w.ctx, w.s.uploadDir(w.id)+"state-", func(o types.Object) error {
		_, err := w.s.client.DeleteObject(w.ctx, &s3.DeleteObjectInput{Bucket: &w.s.opts.Bucket, Key: o.Key})
		return err
	})
	out, err := w.s.client.GetObject(w.ctx, &s3.GetObjectInput{Bucket: &w.s.opts.Bucket, Key: aws.String(w.s.dataKey(w.id))})
	if err != nil {
		return nil, w.s.fail("read an upload", err)
	}
	return out.Body, nil
}

func (w *s3Writer) Commit(d oci.Digest) error {
	defer w.Close()
	if err := w.waitPart(); err != nil {
		return err
	}
	key := w.s.blobKey(d)
	if w.target != "" && w.target != key {
		return fmt.Errorf("blobstore: a direct writer for %s cannot commit %s", w.target, d)
	}
	if size, err := w.s.Stat(w.ctx, d); err == nil && size == w.size {
		// Stored already (content-addressed: the same bytes).
		w.abortDirect()
		return w.s.RemoveUpload(w.ctx, w.id)
	}
	if w.target != "" && w.uploadID != "" {
		// Completed in place: the blob appears whole, and no copy is needed.
		if err := w.assemble(); err != nil {
			return err
		}
	} else if w.uploadID == "" && !w.assembled {
		_, err := w.s.client.PutObject(w.ctx, &s3.PutObjectInput{Bucket: &w.s.opts.Bucket, Key: &key,
			Body: bytes.NewReader(w.buf), ContentLength: aws.Int64(int64(len(w.buf)))})
		if err != nil {
			return w.s.fail("store a blob", err)
		}
	} else {
		if err := w.assemble(); err != nil {
			return err
		}
		if err := w.s.copy(w.ctx, w.s.dataKey(w.id), key, w.size); err != nil {
			return err
		}
	}
	// The blob is in place; staging objects that survive this are the purge's.
	w.s.RemoveUpload(w.ctx, w.id)
	return nil
}

// copy copies object src to dst inside the bucket, in parts when it is too large for
// one CopyObject.
func (s *S3) copy(ctx context.Context, src, dst string, size int64) error {
	source := (&url.URL{Path: s.opts.Bucket + "/" + src}).EscapedPath()
	if size <= maxCopySize {
		_, err := s.client.CopyObject(ctx, &s3.CopyObjectInput{Bucket: &s.opts.Bucket, Key: &dst, CopySource: &source})
		if err != nil {
			return s.fail("copy a blob into place", err)
		}
		return nil
	}
	out, err := s.client.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: &s.opts.Bucket, Key: &dst})
	if err != nil {
		return s.fail("copy a blob into place", err)
	}
	abort := func() {
		s.client.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{Bucket: &s.opts.Bucket, Key: &dst, UploadId: out.UploadId})
	}
	const step = 1 << 30
	var parts []types.CompletedPart
	for off, n := int64(0), int32(1); off < size; off, n = off+step, n+1 {
		rng := fmt.Sprintf("bytes=%d-%d", off, min(off+step, size)-1)
		p, err := s.client.UploadPartCopy(ctx, &s3.UploadPartCopyInput{Bucket: &s.opts.Bucket, Key: &dst, UploadId: out.UploadId,
			PartNumber: aws.Int32(n), CopySource: &source, CopySourceRange: &rng})
		if err != nil {
			abort()
			return s.fail("copy a blob into place", err)
		}
		parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(n), ETag: p.CopyPartResult.ETag})
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: &s.opts.Bucket, Key: &dst,
		UploadId: out.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		abort()
		return s.fail("copy a blob into place", err)
	}
	return nil
}

func (w *s3Writer) Cancel() error {
	w.Close()
	if w.target != "" {
		w.abortDirect()
		return nil
	}
	return w.s.RemoveUpload(context.WithoutCancel(w.ctx), w.id)
}

// abortDirect drops a direct writer's multipart upload (nothing of it is visible).
func (w *s3Writer) abortDirect() {
	if w.target != "" && w.uploadID != "" && !w.assembled {
		w.s.client.AbortMultipartUpload(context.WithoutCancel(w.ctx), &s3.AbortMultipartUploadInput{Bucket: &w.s.opts.Bucket,
			Key: &w.target, UploadId: &w.uploadID})
	}
}

func (w *s3Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.closed = true
		w.s.release(w.id, w.uploadID)
		w.waitPart()
		w.s.giveBuffer(w.buf)
		w.s.giveBuffer(w.spare)
		w.buf, w.spare = nil, nil
	}
	return nil
}

// Bucket is the store's bucket.
func (s *S3) Bucket() string { return s.opts.Bucket }

// twoSlices reads a then b, and seeks (the SDK rewinds bodies to sign and retry them).
type twoSlices struct {
	a, b []byte
	pos  int64
}

func (r *twoSlices) Read(p []byte) (int, error) {
	la := int64(len(r.a))
	if r.pos >= la+int64(len(r.b)) {
		return 0, io.EOF
	}
	var n int
	if r.pos < la {
		n = copy(p, r.a[r.pos:])
		n += copy(p[n:], r.b)
	} else {
		n = copy(p, r.b[r.pos-la:])
	}
	r.pos += int64(n)
	return n, nil
}

func (r *twoSlices) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += int64(len(r.a) + len(r.b))
	}
	if offset < 0 {
		return 0, errors.New("blobstore: seek before the start")
	}
	r.pos = offset
	return offset, nil
}
