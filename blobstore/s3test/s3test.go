// Package s3test starts a real S3 server (versitygw, on loopback) for the tests of
// every package that stores blobs in S3. It is for tests only.
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/dockyard/dockyard/blobstore"
)

// Server is a versitygw serving a directory on loopback.
type Server struct {
	Endpoint       string
	Access, Secret string
	bin, dir, addr string
	cmd            *exec.Cmd
}

// ErrUnavailable: no versitygw binary was found.
var ErrUnavailable = errors.New("s3test: versitygw is not installed (make tools installs it into .tools/)")

// Required tells whether S3 tests must run (make test sets DOCKYARD_S3_TESTS=1); when
// it is not set and versitygw is missing, they are skipped.
func Required() bool { return os.Getenv("DOCKYARD_S3_TESTS") == "1" }

// binary finds versitygw: $DOCKYARD_VERSITYGW, the module's .tools/, or PATH.
func binary() (string, error) {
	if p := os.Getenv("DOCKYARD_VERSITYGW"); p != "" {
		return p, nil
	}
	if wd, err := os.Getwd(); err == nil {
		for dir := wd; dir != filepath.Dir(dir); dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, ".tools", "versitygw")
				if _, err := os.Stat(p); err == nil {
					return p, nil
				}
				break
			}
		}
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	return "", ErrUnavailable
}

// Start starts a server on a free port, storing under a new temporary directory.
func Start() (*Server, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "dockyard-s3-")
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Endpoint: "http://" + addr, Access: "dockyardtest", Secret: "dockyardtestsecret", bin: bin, dir: dir, addr: addr}
	if err := s.Resume(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// Resume starts the server again after Pause, on the same address and data.
func (s *Server) Resume() error {
	cmd := exec.Command(s.bin, "--port", s.addr, "--access", s.Access, "--secret", s.Secret, "posix", s.dir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY=", "ROOT_SECRET_KEY=")
	logf, err := os.Create(s.dir + ".log")
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", s.addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.Pause()
	log, _ := os.ReadFile(s.dir + ".log")
	return fmt.Errorf("s3test: versitygw did not listen on %s: %s", s.addr, strings.TrimSpace(string(log)))
}

// Pause stops the server (to test an S3 that went away); Resume brings it back.
func (s *Server) Pause() {
	if s.cmd != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Stop stops the server and removes its data.
func (s *Server) Stop() {
	s.Pause()
	os.RemoveAll(s.dir)
	os.Remove(s.dir + ".log")
}

// Options are store options for bucket on this server.
func (s *Server) Options(bucket string) blobstore.S3Options {
	return blobstore.S3Options{Endpoint: s.Endpoint, Region: "us-east-1", Bucket: bucket, PathStyle: true,
		AccessKeyID: s.Access, SecretAccessKey: s.Secret}
}

// Client is an S3 client of the server, for checking what the bucket holds.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{Region: "us-east-1", BaseEndpoint: aws.String(s.Endpoint), UsePathStyle: true,
		Credentials: aws.NewCredentialsCache(staticCreds{s.Access, s.Secret})})
}

type staticCreds struct{ id, secret string }

func (c staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: c.id, SecretAccessKey: c.secret}, nil
}

// NewBucket creates a bucket with a fresh name.
func (s *Server) NewBucket(ctx context.Context) (string, error) {
	var b [6]byte
	rand.Read(b[:])
	name := "t-" + hex.EncodeToString(b[:])
	_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name})
	return name, err
}

// Keys lists the keys of a bucket under prefix, and the keys of its multipart uploads.
func (s *Server) Keys(ctx context.Context, bucket, prefix string) (objects, multipart []string, err error) {
	c := s.Client()
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, nil, err
		}
		for _, o := range page.Contents {
			objects = append(objects, aws.ToString(o.Key))
		}
	}
	out, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: &bucket, Prefix: &prefix})
	if err != nil {
		return nil, nil, err
	}
	for _, u := range out.Uploads {
		multipart = append(multipart, aws.ToString(u.Key))
	}
	return objects, multipart, nil
}

// Shared starts one server for a test binary: call it from TestMain, run the tests,
// then stop it. It returns nil (and the tests that need it skip) when versitygw is
// missing and S3 tests are not required.
func Shared() (*Server, error) {
	s, err := Start()
	if errors.Is(err, ErrUnavailable) && !Required() {
		return nil, nil
	}
	return s, err
}

// Need returns the shared server or skips t when there is none.
func Need(t testing.TB, s *Server) *Server {
	t.Helper()
	if s == nil {
		t.Skip("versitygw is not installed; S3 cases skipped (make test runs them)")
	}
	return s
}

// Main is the TestMain of a package with S3 tests: it starts the shared server into
// *srv (nil when versitygw is missing and S3 tests are not required), runs the tests
// and stops it.
func Main(m *testing.M, srv **Server) {
	s, err := Shared()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*srv = s
	code := m.Run()
	if s != nil {
		s.Stop()
	}
	os.Exit(code)
}

// Store is a store on a new bucket of srv (skipping t when there is no server), with
// S3's smallest part size so that a few MiB cross part boundaries; adjust changes the
// options first. It returns the bucket's name too.
func Store(t testing.TB, srv *Server, adjust ...func(*blobstore.S3Options)) (*blobstore.S3, string) {
	t.Helper()
	srv = Need(t, srv)
	bucket, err := srv.NewBucket(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	o := srv.Options(bucket)
	o.PartSize = blobstore.MinPartSize
	for _, a := range adjust {
		a(&o)
	}
	s, err := blobstore.NewS3(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return s, bucket
}
