package auth

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// ErrBadCredentials is a wrong user name or password. The message never says which.
var ErrBadCredentials = errors.New("invalid username or password")

// ErrUnknownUser means this source does not know the user (another source may).
var ErrUnknownUser = errors.New("unknown user")

// MinBcryptCost is the weakest bcrypt cost accepted in a users file.
const MinBcryptCost = 10

// UsersFile checks passwords against an htpasswd file of bcrypt hashes. It re-reads
// the file when its modification time changes (checked at most once a second).
type UsersFile struct {
	path string

	mu      sync.Mutex
	users   map[string][]byte // user → bcrypt hash
	modTime time.Time
	checked time.Time
}

// NewUsersFile loads path and fails on entries that are not bcrypt of cost ≥ 10.
func NewUsersFile(path string) (*UsersFile, error) {
	u := &UsersFile{path: path}
	if err := u.reload(true); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *UsersFile) reload(force bool) error {
	fi, err := os.Stat(u.path)
	if err != nil {
		return err
	}
	if !force && fi.ModTime().Equal(u.modTime) {
		return nil
	}
	f, err := os.Open(u.path)
	if err != nil {
		return err
	}
	defer f.Close()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return fmt.Errorf("%s:%d: expected user:bcrypt-hash", u.path, n)
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil || !bcryptForm.MatchString(hash) {
			return fmt.Errorf("%s:%d: user %s: only bcrypt hashes are accepted (htpasswd -B)", u.path, n, name)
		}
		if cost < MinBcryptCost {
			return fmt.Errorf("%s:%d: user %s: bcrypt cost %d is below %d", u.path, n, name, cost, MinBcryptCost)
		}
		users[name] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return err
	}
	u.users, u.modTime = users, fi.ModTime()
	return nil
}

// bcryptForm is a whole bcrypt hash as htpasswd -B writes it: bcrypt.Cost reads only
// its head, and takes other versions ("$0") and hashes of any length.
var bcryptForm = regexp.MustCompile(`^\$2[abxy]?\$[0-9]{2}\$[./A-Za-z0-9]{53}$`)

// dummyHash keeps the time of a check for an unknown user close to a known user's.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("dockyard timing equaliser"), MinBcryptCost)

// refresh re-reads the file when it changed, at most once a second. Call with mu held.
func (u *UsersFile) refresh() {
	if time.Since(u.checked) > time.Second {
		u.checked = time.Now()
		// On error the last good file stays in force: a half-written file must not lock
		// everyone out.
		_ = u.reload(false)
	}
}

func (u *UsersFile) Check(ctx context.Context, user, password string) (*Identity, error) {
	u.mu.Lock()
	u.refresh()
	hash, ok := u.users[user]
	u.mu.Unlock()
	if !ok {
		bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return nil, ErrUnknownUser
	}
	if bcrypt.CompareHashAndPassword(hash, []byte(password)) != nil {
		return nil, ErrBadCredentials
	}
	return &Identity{Name: user, Source: "users-file"}, nil
}

// Has reports whether the file lists user (refresh tokens of deleted users stop working).
func (u *UsersFile) Has(user string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.refresh()
	_, ok := u.users[user]
	return ok
}

// constantTimeEqual compares secrets without leaking where they differ.
func constantTimeEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
